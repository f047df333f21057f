# Generates a C++ source holding every migrations/NNNN_name.sql as a string, so the
# binaries carry their schema. Invoked at build time with -DMIGRATIONS_DIR= -DOUT=.
file(GLOB files ${MIGRATIONS_DIR}/*.sql)
list(SORT files)
set(body "// Generated from migrations/*.sql. Do not edit.\n#include \"src/store/migrations.h\"\n\nnamespace surplus::store {\n\nconst std::vector<Migration>& EmbeddedMigrations() {\n  static const std::vector<Migration>* m = new std::vector<Migration>{\n")
foreach(f ${files})
  get_filename_component(name ${f} NAME_WE)
  string(REGEX MATCH "^[0-9]+" version ${name})
  # As a decimal literal: a leading 0 would make C++ read "0008" as a (bad) octal number.
  math(EXPR version "${version}" OUTPUT_FORMAT DECIMAL)
  file(READ ${f} sql)
  string(APPEND body "    {${version}, \"${name}\", R\"surplus_sql(${sql})surplus_sql\"},\n")
endforeach()
string(APPEND body "  };\n  return *m;\n}\n\n}  // namespace surplus::store\n")
file(WRITE ${OUT}.tmp "${body}")
file(COPY_FILE ${OUT}.tmp ${OUT} ONLY_IF_DIFFERENT)

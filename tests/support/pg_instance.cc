#include "tests/support/pg_instance.h"

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "tests/support/process.h"

namespace surplus::testing {

std::string PgInstance::RunAsOwner(const std::string& shell_command, int* rc) {
  std::string out;
  std::vector<std::string> argv;
  if (as_postgres_) {
    argv = {"runuser", "-u", "postgres", "--", "/bin/sh", "-c", shell_command};
  } else {
    argv = {"/bin/sh", "-c", shell_command};
  }
  *rc = RunCommand(argv, &out);
  return out;
}

PgInstance::PgInstance() {
  as_postgres_ = geteuid() == 0;
  dir_ = MakeTempDir("surplus-pg-");
  if (as_postgres_) {
    struct passwd* pw = getpwnam("postgres");
    if (pw == nullptr) {
      std::cerr << "tests need a 'postgres' user to run PostgreSQL when running as root\n";
      std::abort();
    }
    if (chown(dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0) std::abort();
    chmod(dir_.c_str(), 0700);
  }
  port_ = FreePort();
  int rc = 0;
  std::string out = RunAsOwner(
      absl::StrCat("initdb -D ", dir_, "/data -A trust -U surplus --no-sync -E UTF8 > ", dir_, "/initdb.log 2>&1"),
      &rc);
  if (rc != 0) {
    std::cerr << "initdb failed (is PostgreSQL installed and on PATH?): " << ReadFile(dir_ + "/initdb.log") << "\n";
    std::abort();
  }
  Start();
}

void PgInstance::Start() {
  int rc = 0;
  RunAsOwner(absl::StrCat("pg_ctl -D ", dir_, "/data -l ", dir_, "/server.log -w -t 30 -o \"",
                          "-c listen_addresses=127.0.0.1 -p ", port_, " -c unix_socket_directories=", dir_,
                          " -c max_connections=200 -c shared_buffers=64MB\" start > /dev/null"),
             &rc);
  if (rc != 0) {
    std::cerr << "PostgreSQL did not start: " << ReadFile(dir_ + "/server.log") << "\n";
    std::abort();
  }
}

void PgInstance::Stop() {
  int rc = 0;
  RunAsOwner(absl::StrCat("pg_ctl -D ", dir_, "/data -m fast -w stop > /dev/null"), &rc);
}

PgInstance::~PgInstance() {
  Stop();
  std::string out;
  RunCommand({"rm", "-rf", dir_}, &out);
}

std::string PgInstance::CreateDatabase(const std::string& name) {
  std::string out;
  int rc = RunCommand({"psql", "-h", "127.0.0.1", "-p", std::to_string(port_), "-U", "surplus", "-d", "postgres",
                       "-v", "ON_ERROR_STOP=1", "-q", "-c", absl::StrCat("CREATE DATABASE \"", name, "\"")},
                      &out);
  if (rc != 0) {
    std::cerr << "CREATE DATABASE failed: " << out << "\n";
    std::abort();
  }
  return absl::StrCat("postgresql://surplus@127.0.0.1:", port_, "/", name);
}

PgInstance& SharedPg() {
  static PgInstance* pg = new PgInstance();
  static bool registered = [] {
    std::atexit([] { delete pg; });
    return true;
  }();
  (void)registered;
  return *pg;
}

}  // namespace surplus::testing

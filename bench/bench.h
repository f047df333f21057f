#pragma once
// Shared pieces of the surplus-bench subcommands: flags, a JSON object writer, tables.

#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace surplus::bench {

int RunSchedBench(int argc, char** argv);
int RunQuoteBench(int argc, char** argv);
int RunPackBench(int argc, char** argv);
int RunHarvestBench(int argc, char** argv);
#ifdef SURPLUS_HAVE_SUBMIT_BENCH
int RunSubmitBench(int argc, char** argv);
int RunTelemetryBench(int argc, char** argv);
int RunQuoteApiBench(int argc, char** argv);
#endif

/// "--name value" and "--flag" arguments after the subcommand.
class Flags {
 public:
  Flags(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      if (a.rfind("--", 0) != 0) {
        bad_ = a;
        continue;
      }
      a = a.substr(2);
      if (auto eq = a.find('='); eq != std::string::npos) {
        values_[a.substr(0, eq)] = a.substr(eq + 1);
      } else if (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0) {
        values_[a] = argv[++i];
      } else {
        values_[a] = "";
      }
    }
  }
  bool Has(const std::string& k) const { return values_.count(k) > 0; }
  std::string Get(const std::string& k, const std::string& def) const {
    auto it = values_.find(k);
    return it == values_.end() ? def : it->second;
  }
  int64_t GetInt(const std::string& k, int64_t def) const {
    auto it = values_.find(k);
    return it == values_.end() || it->second.empty() ? def : std::stoll(it->second);
  }
  const std::string& bad() const { return bad_; }

 private:
  std::map<std::string, std::string> values_;
  std::string bad_;
};

/// Builds one flat-or-nested JSON object in insertion order.
class Json {
 public:
  Json& Num(const std::string& k, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.6g", v);
    return Raw(k, buf);
  }
  Json& Int(const std::string& k, int64_t v) { return Raw(k, std::to_string(v)); }
  Json& Str(const std::string& k, const std::string& v) {
    std::string q = "\"";
    for (char c : v) {
      if (c == '"' || c == '\\') q += '\\';
      q += c;
    }
    return Raw(k, q + "\"");
  }
  Json& Obj(const std::string& k, const Json& v) { return Raw(k, v.str()); }
  Json& Raw(const std::string& k, const std::string& v) {
    fields_.push_back({k, v});
    return *this;
  }
  std::string str() const {
    std::string out = "{";
    for (size_t i = 0; i < fields_.size(); ++i) {
      if (i) out += ",";
      out += "\"" + fields_[i].first + "\":" + fields_[i].second;
    }
    return out + "}";
  }

 private:
  std::vector<std::pair<std::string, std::string>> fields_;
};

/// Prints rows as an aligned text table.
inline void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size(); ++i) {
      if (width.size() <= i) width.push_back(0);
      width[i] = std::max(width[i], r[i].size());
    }
  }
  for (size_t k = 0; k < rows.size(); ++k) {
    std::string line;
    for (size_t i = 0; i < rows[k].size(); ++i) {
      std::string cell = rows[k][i];
      cell.resize(width[i], ' ');
      line += (i ? "  " : "") + cell;
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    std::printf("%s\n", line.c_str());
    if (k == 0) {
      size_t total = 0;
      for (size_t w : width) total += w + 2;
      std::printf("%s\n", std::string(total - 2, '-').c_str());
    }
  }
}

inline std::string Fmt(double v, int decimals = 2) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

}  // namespace surplus::bench

#include "src/common/flags.h"

#include <cctype>

namespace surplus {

void BindEnvironment(CLI::App& app) {
  for (CLI::Option* opt : app.get_options()) {
    if (!opt->get_envname().empty() || opt->get_lnames().empty()) continue;
    if (opt->get_lnames().front() == "help") continue;
    std::string env = "SURPLUS_";
    for (char c : opt->get_lnames().front()) {
      env.push_back(c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
    }
    opt->envname(env);
  }
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) {
    BindEnvironment(*sub);
  }
}

}  // namespace surplus

#pragma once
// Every long flag `--some-name` also reads `SURPLUS_SOME_NAME` from the environment.

#include <CLI/CLI.hpp>

namespace surplus {

/// Gives every long option of `app` and its subcommands (recursively) the environment
/// variable SURPLUS_<NAME> (upper case, '-' -> '_'), unless it already has one.
/// Call after all options are declared and before parsing.
void BindEnvironment(CLI::App& app);

}  // namespace surplus

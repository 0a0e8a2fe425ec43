// pitbox: the command line.
#include <CLI/CLI.hpp>
#include <cstring>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/run.h"

int main(int argc, char** argv) {
  using pitbox::cli::GlobalOptions;
  using pitbox::cli::RunOptions;

  CLI::App app{"pitbox: a sandbox computer for every agent"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("pitbox ") + PITBOX_VERSION);
  GlobalOptions global;
  app.add_option("--state", global.state_dir, "State directory")
      ->envname("PITBOX_STATE")
      ->capture_default_str();
  app.add_option("--cgroup-parent", global.cgroup_parent,
                 "Cgroup under which boxes get theirs (one per controller on cgroup v1)")
      ->envname("PITBOX_CGROUP_PARENT")
      ->capture_default_str();

  RunOptions run;
  CLI::App* run_cmd = app.add_subcommand(
      "run", "Run a command in a new box, with stdio attached; the box is gone when it ends");
  run_cmd
      ->add_option("--image", run.image,
                   "Image: busybox, host or one of the store (by name, tag or id)")
      ->capture_default_str();
  run_cmd->add_option("--cpus", run.cpus, "CPU limit, e.g. 0.5 or 2");
  run_cmd->add_option("--memory,-m", run.memory, "Memory limit, e.g. 512m or 2g (no swap)");
  run_cmd->add_option("--pids", run.pids, "Most processes and threads at once");
  run_cmd->add_option("--env,-e", run.env, "KEY=VALUE, or KEY to pass this shell's value")
      ->allow_extra_args(false);
  run_cmd->add_option("--workdir,-w", run.workdir, "Working directory in the box (created)");
  run_cmd->add_option("--user,-u", run.user, "User: name, uid or uid:gid");
  run_cmd->add_flag("--tty,-t", run.tty, "Give the command a terminal");
  run_cmd->add_flag("--interactive,-i", run.interactive, "Attach stdin even when it is a terminal");
  // Everything from the first word that is not an option on is the command (or after "--").
  run_cmd->prefix_command();
  run_cmd->allow_extras();

  auto client_commands = pitbox::cli::add_client_commands(app, global);
  // The image and state commands' options are only made when the command line asks for them: making
  // CLI11 objects touches fresh memory, and page faults are what `pitbox run` costs most.
  bool image_asked = false, state_asked = false;
  for (int i = 1; i < argc && std::strcmp(argv[i], "--") != 0; ++i) {
    image_asked = image_asked || std::strcmp(argv[i], "image") == 0;
    state_asked = state_asked || pitbox::cli::names_state_command(argv[i]);
  }
  auto image_commands = pitbox::cli::add_image_commands(app, global, image_asked);
  auto state_commands = pitbox::cli::add_state_commands(app, global, state_asked);

  // "pitbox run [OPTIONS] -- COMMAND...": everything after the first "--" is the command, even
  // words that look like options. CLI11 only sees what comes before it.
  int parsed_argc = argc;
  std::vector<std::string> after_dashes;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--") == 0) {
      parsed_argc = i;
      after_dashes.assign(argv + i + 1, argv + argc);
      break;
    }
  }
  try {
    app.parse(parsed_argc, argv);
  } catch (const CLI::ParseError& e) {
    bool in_run = false;
    for (int i = 1; i < argc; ++i) {
      if (std::strcmp(argv[i], "run") == 0) in_run = true;
      if (argv[i][0] != '-') break;
    }
    int code = app.exit(e);
    return in_run && code != 0 ? pitbox::cli::kExitPitboxError : code;
  }
  if (*run_cmd) {
    run.command = run_cmd->remaining();
    if (parsed_argc != argc && !run.command.empty()) run.command.push_back("--");
    run.command.insert(run.command.end(), after_dashes.begin(), after_dashes.end());
    return pitbox::cli::run_command(global, run);
  }
  if (client_commands->chosen()) return client_commands->run(after_dashes);
  if (image_commands->chosen()) return image_commands->run(after_dashes);
  if (state_commands->chosen()) return state_commands->run(after_dashes);
  return 0;
}

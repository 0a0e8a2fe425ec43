// pitbox run: a one-shot box for one command, with stdio attached; gone when the command ends.
#pragma once

#include <string>
#include <vector>

namespace pitbox::cli {

struct GlobalOptions {
  std::string state_dir = "/var/lib/pitbox";
  std::string cgroup_parent = "pitbox";
};

struct RunOptions {
  std::string image = "host";
  std::string cpus;
  std::string memory;
  std::string pids;
  std::vector<std::string> env;
  std::string workdir;
  std::string user;
  bool tty = false;
  bool interactive = false;
  std::vector<std::string> command;
};

// Exit status: the command's (128 + signal when killed), or 125 when pitbox itself failed.
int run_command(const GlobalOptions& global, const RunOptions& options);

constexpr int kExitPitboxError = 125;

}  // namespace pitbox::cli

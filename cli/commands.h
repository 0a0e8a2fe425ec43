// The client commands of the CLI (create, ls, inspect, exec, shell, cp, rm, stop, start, label,
// logs, keys) and `serve`: each but serve talks to the daemon through its API.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>
#include <vector>

#include "cli/run.h"
#include "client/client.h"

namespace pitbox::cli {

class ClientCommands {
 public:
  virtual ~ClientCommands() = default;
  // Whether one of these commands was chosen on the command line.
  virtual bool chosen() const = 0;
  // Runs it; `after_dashes` is what came after "--". Returns the exit code.
  virtual int run(const std::vector<std::string>& after_dashes) = 0;
};

// Adds the commands to `app`; the object holds their options and must outlive the parse.
std::unique_ptr<ClientCommands> add_client_commands(CLI::App& app, GlobalOptions& global);

// The image commands (pitbox image ...); without `full`, only the `image` command itself (for
// --help), whose subcommands are added when the command line names it.
std::unique_ptr<ClientCommands> add_image_commands(CLI::App& app, GlobalOptions& global, bool full);

// pause, resume, resize, snapshot, fork, restore, archive; without `full` only the commands
// themselves (for --help), their options added when the command line names one.
std::unique_ptr<ClientCommands> add_state_commands(CLI::App& app, GlobalOptions& global, bool full);
bool names_state_command(const char* arg);

// The API's address and key: --url/--key, else PITBOX_API_URL/PITBOX_API_KEY, else the local
// daemon and its admin key. unauthenticated when there is no key.
client::Config client_config(const GlobalOptions& global, const std::string& url,
                             const std::string& key);

// Exit code of client commands when pitbox itself failed (exec and shell use 125, as run does).
constexpr int kExitClientError = 1;

}  // namespace pitbox::cli

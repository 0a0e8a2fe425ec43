// The signals pitbox-init handles itself. It starts from default dispositions for all others,
// so a child it spawns only has to put these back.
#pragma once

#include <signal.h>

namespace pitbox::init {

// Passed on to every process init started.
constexpr int kForwardedSignals[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
// Everything init changes: the forwarded signals, SIGCHLD (handled) and SIGPIPE (ignored).
constexpr int kInitSignals[] = {SIGTERM, SIGINT,  SIGHUP,  SIGQUIT,
                                SIGUSR1, SIGUSR2, SIGCHLD, SIGPIPE};

}  // namespace pitbox::init

// The Runtime interface: how a box is isolated. Every runtime starts pitbox-init as the box's
// PID 1 with the control channel attached; everything after that speaks the box protocol.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sys/cgroup.h"
#include "sys/fd.h"
#include "sys/process.h"

namespace pitbox::runtime {

// A host path made visible in the box. Not id-mapped: host files keep their host owners, so a
// box's root is "nobody" to them.
struct Bind {
  std::string source;  // absolute host path
  std::string target;  // absolute path in the box
  bool read_only = true;
};

struct RootfsSpec {
  // Read-only layer directories, topmost first. Their files are owned by the box's ids as
  // seen from inside (uid 0 = the box's root); the runtime id-maps them.
  std::vector<std::string> layers;
  // The box's writable layer and overlayfs's work directory: two directories on one
  // filesystem, stored with the same in-box ids as the layers. Unused when ephemeral.
  std::string upper;
  std::string work;
  // The writable layer lives in memory (a tmpfs charged to the box's memory cgroup) and goes
  // with the box: nothing of it ever reaches the disk. For one-shot boxes.
  bool ephemeral = false;
  uint64_t ephemeral_size = 0;  // bytes; 0 = the kernel's default (half of RAM)
  // An empty directory the runtime may mount the root on. Boxes can share it: each mounts
  // there only inside its own mount namespace.
  std::string mountpoint;
  std::vector<Bind> binds;
};

// The host ids a box's ids 0..count-1 map to.
struct IdMapping {
  uint32_t host_base = 0;
  uint32_t count = 65536;
};

struct BoxSpec {
  std::string id;  // also the cgroup's name
  std::string hostname;
  RootfsSpec rootfs;
  IdMapping ids;
  sys::CgroupLimits limits;
  // A cgroup for usage figures (cpu, memory, pids) and freezing even without limits. Without it
  // and without limits a box has no cgroup of its own.
  bool accounting = false;
  // The box's /etc/hosts and /etc/resolv.conf ("": left as they are), written into its writable
  // layer at every start.
  std::string etc_hosts;
  std::string resolv_conf;
  // The box is killed when the thread that started it dies (one-shot boxes).
  bool die_with_parent = false;
  // A network namespace made ahead for the box (net::Network), owned by the host: the box's
  // root cannot change its interfaces, addresses or routes. -1: a fresh namespace with only
  // loopback, the box's own. The caller keeps the fd; the box's processes keep the namespace.
  int netns_fd = -1;
};

// A started box: its init is running and holds the other end of `channel`.
class Box {
 public:
  virtual ~Box() = default;
  virtual const std::string& id() const = 0;
  virtual pid_t init_pid() const = 0;
  // The node's end of the control channel (taken once).
  virtual sys::UniqueFd take_channel() = 0;
  // What init writes to its stderr (taken once).
  virtual sys::UniqueFd take_init_log() = 0;
  virtual sys::CgroupStats stats() const = 0;
  // Changes a running box's hostname (its UTS namespace) and its limits. A limit the kernel
  // refuses (say, memory below what the box uses) is an error and leaves the others as they
  // were given; a box without a cgroup gets one only at its next start.
  virtual void set_hostname(const std::string& hostname) = 0;
  virtual void set_limits(const sys::CgroupLimits& limits) = 0;
  // Freezes every process of the box (pause) and lets them go on (resume); see sys::Cgroup.
  virtual void freeze() = 0;
  virtual void thaw() = 0;
  virtual bool frozen() const = 0;
  // Waits for init to exit (the box is dead then) and returns how it ended.
  virtual std::optional<sys::ExitStatus> wait(std::chrono::milliseconds timeout) = 0;
  // Kills every process of the box and removes what the runtime made for it. Idempotent;
  // the destructor does it too.
  virtual void destroy() = 0;
  // Lets go of the box and leaves it running (a daemon shutting down): after this the object
  // owns nothing, and a later process may reattach().
  virtual void detach() = 0;
};

class Runtime {
 public:
  virtual ~Runtime() = default;
  virtual std::string_view name() const = 0;
  // Starts a box; on failure nothing is left (no process, mount or cgroup) and the Error
  // names the step that failed.
  virtual std::unique_ptr<Box> start(const BoxSpec& spec) = 0;
  // A box left running by a process that has gone (a restarted daemon): its init is found by pid
  // and start time, and a new channel is taken from it (init's spare channel). Null when that
  // init no longer runs; then its leftovers are removed.
  virtual std::unique_ptr<Box> reattach(const BoxSpec& spec, sys::ProcessRef init) = 0;
  // Removes what a box left behind when the process that ran it died without cleaning up
  // (its cgroup, killing anything still in it). A box that left nothing is not an error.
  virtual void remove_leftovers(const std::string& box_id) = 0;
};

}  // namespace pitbox::runtime

#include "runtime/container/container.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <thread>

#include "proto/frame.h"
#include "runtime/container/caps.h"
#include "runtime/container/cgroup.h"
#include "runtime/container/child.h"
#include "runtime/container/mounts.h"
#include "runtime/container/seccomp.h"
#include "runtime/container/user.h"
#include "sys/error.h"
#include "sys/fs.h"
#include "sys/netlink.h"
#include "sys/process.h"

namespace pitbox::runtime::container {

namespace {

constexpr size_t kChildStack = 256 * 1024;
constexpr auto kStartTimeout = std::chrono::seconds(30);

// The child's stack: memory shared with the parent (CLONE_VM) until the child execs.
class Stack {
 public:
  Stack() {
    mem_ = ::mmap(nullptr, kChildStack, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (mem_ == MAP_FAILED) throw_errno("mmap child stack");
  }
  ~Stack() { ::munmap(mem_, kChildStack); }
  Stack(const Stack&) = delete;
  Stack& operator=(const Stack&) = delete;
  void* top() const { return static_cast<char*>(mem_) + kChildStack; }

 private:
  void* mem_;
};

std::pair<sys::UniqueFd, sys::UniqueFd> socket_pair(int type) {
  int sv[2];
  if (::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv) != 0) throw_errno("socketpair");
  return {sys::UniqueFd(sv[0]), sys::UniqueFd(sv[1])};
}

void send_go(int sync_fd, int root_mount_fd) {
  GoMessage go{kGoMagic};
  iovec iov{&go, sizeof go};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &root_mount_fd, sizeof(int));
  if (::sendmsg(sync_fd, &msg, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof go)) {
    throw_errno("handing the root filesystem to the box");
  }
}

// Waits until the child has exec'd pitbox-init (its end of the sync socket closes) or reports
// a failure.
void wait_for_exec(int sync_fd, sys::Pidfd& child) {
  pollfd p{sync_fd, POLLIN, 0};
  int ready = ::poll(&p, 1, static_cast<int>(std::chrono::milliseconds(kStartTimeout).count()));
  if (ready == 0) throw Error(ErrorCode::unavailable, "the box did not start within 30 s");
  ChildFailure failure{};
  ssize_t n = ::recv(sync_fd, &failure, sizeof failure, 0);
  if (n == 0) {
    // Closed: the child exec'd pitbox-init, or died without a word (killed, out of memory).
    if (auto status = child.try_wait()) {
      throw Error(
          ErrorCode::internal,
          "the box's first process ended before starting pitbox-init (" + status->describe() + ")");
    }
    return;
  }
  if (n != static_cast<ssize_t>(sizeof failure)) throw_errno("reading the box's start report");
  failure.what[sizeof failure.what - 1] = 0;
  std::string what = failure.what[0] ? std::string(" ") + failure.what : "";
  std::string message = std::string("box setup failed while ") + step_name(failure.step) + what +
                        ": " + std::strerror(failure.err);
  if (failure.step == Step::mount && failure.err == ELOOP) {
    message = std::string("box setup failed: the image has a symlink at /") + failure.what +
              ", where pitbox mounts a filesystem";
  }
  throw Error(error_code_from_errno(failure.err), message,
              {{"step", step_name(failure.step)}, {"errno", failure.err}});
}

// Boxes get as many open files as the host allows (1M where it can), not the 1024 a login
// shell often starts with.
void raise_open_files_limit(pid_t pid) {
  rlimit files{};
  if (::prlimit(pid, RLIMIT_NOFILE, nullptr, &files) != 0) throw_errno("prlimit");
  rlimit wanted{1u << 20, 1u << 20};
  if (::prlimit(pid, RLIMIT_NOFILE, &wanted, nullptr) == 0) return;
  wanted = {files.rlim_max, files.rlim_max};  // raising the hard limit needs CAP_SYS_RESOURCE
  if (::prlimit(pid, RLIMIT_NOFILE, &wanted, nullptr) != 0) throw_errno("prlimit");
}

class ContainerBox final : public Box {
 public:
  ContainerBox(std::string id, sys::Pidfd init, std::unique_ptr<sys::Cgroup> cgroup,
               sys::UniqueFd channel, sys::UniqueFd log)
      : id_(std::move(id)),
        init_(std::move(init)),
        cgroup_(std::move(cgroup)),
        channel_(std::move(channel)),
        log_(std::move(log)) {}
  ~ContainerBox() override {
    try {
      destroy();
    } catch (...) {
    }
  }

  void detach() override {
    if (cgroup_) cgroup_->disown();
    cgroup_.reset();
    init_ = sys::Pidfd();
    channel_.reset();
    log_.reset();
  }

  const std::string& id() const override { return id_; }
  pid_t init_pid() const override { return init_.pid(); }
  sys::UniqueFd take_channel() override { return std::move(channel_); }
  sys::UniqueFd take_init_log() override { return std::move(log_); }
  sys::CgroupStats stats() const override {
    return cgroup_ ? cgroup_->stats() : sys::CgroupStats{};
  }
  std::optional<sys::ExitStatus> wait(std::chrono::milliseconds timeout) override {
    return init_.wait(timeout);
  }

  void set_hostname(const std::string& hostname) override {
    if (!init_.valid()) throw Error(ErrorCode::conflict, "box " + id_ + " does not run");
    // setns changes only the calling thread's UTS namespace: a thread of its own does it.
    int error = 0;
    std::thread([&] {
      if (::setns(init_.fd(), CLONE_NEWUTS) != 0 ||
          ::sethostname(hostname.data(), hostname.size()) != 0) {
        error = errno;
      }
    }).join();
    if (error) {
      errno = error;
      throw_errno("setting the hostname of box " + id_);
    }
  }

  void set_limits(const sys::CgroupLimits& limits) override {
    if (!cgroup_) {
      throw Error(ErrorCode::unavailable,
                  "box " + id_ + " has no cgroup to limit until it starts again");
    }
    cgroup_->set_limits(limits);
  }

  void freeze() override { need_cgroup("paused")->freeze(); }
  void thaw() override { need_cgroup("resumed")->thaw(); }
  bool frozen() const override { return cgroup_ && cgroup_->frozen(); }

  void destroy() override {
    // A frozen init would keep its SIGKILL pending: thawed first (the kill follows at once).
    if (cgroup_ && init_.valid() && cgroup_->frozen()) cgroup_->thaw();
    // Killing init ends the pid namespace: the kernel kills every other process in it and the
    // box's mounts go with its mount namespace.
    init_.kill_and_reap();
    if (cgroup_) {
      cgroup_->remove();
      cgroup_.reset();
    }
    channel_.reset();
    log_.reset();
  }

 private:
  sys::Cgroup* need_cgroup(const char* what) {
    if (!cgroup_) {
      throw Error(ErrorCode::unavailable, "box " + id_ + " has no cgroup and cannot be " + what);
    }
    return cgroup_.get();
  }

  std::string id_;
  sys::Pidfd init_;
  std::unique_ptr<sys::Cgroup> cgroup_;
  sys::UniqueFd channel_;
  sys::UniqueFd log_;
};

}  // namespace

ContainerRuntime::ContainerRuntime(Options options)
    : options_(std::move(options)),
      cgroups_(sys::Cgroups::detect(options_.cgroup_parent)),
      caps_(default_capabilities()),
      last_cap_(sys::last_capability()) {
  init_fd_ = sys::UniqueFd(::open(options_.init_path.c_str(), O_PATH | O_CLOEXEC));
  if (!init_fd_) throw_errno("pitbox-init at " + options_.init_path);
}

ContainerRuntime::~ContainerRuntime() = default;

std::unique_ptr<Box> ContainerRuntime::start(const BoxSpec& spec) {
  if (spec.id.empty() || spec.hostname.empty() || spec.hostname.size() > 64) {
    throw invalid_argument("a box needs an id and a hostname of at most 64 characters");
  }
  MountPlan mounts = MountPlan::for_box(spec);
  std::unique_ptr<sys::Cgroup> cgroup = create_box_cgroup(*cgroups_, spec);

  auto [sync_parent, sync_child] = socket_pair(SOCK_SEQPACKET);
  auto [channel_node, channel_init] = socket_pair(SOCK_STREAM);
  int log_pipe[2];
  if (::pipe2(log_pipe, O_CLOEXEC) != 0) throw_errno("pipe2");
  sys::UniqueFd log_read(log_pipe[0]), log_write(log_pipe[1]);

  std::string init_arg0 = "pitbox-init";
  char* init_argv[] = {init_arg0.data(), nullptr};
  char* init_envp[] = {nullptr};
  ChildPlan plan;
  plan.sync_fd = sync_child.get();
  plan.channel_fd = channel_init.get();
  plan.log_fd = log_write.get();
  plan.init_fd = init_fd_.get();
  plan.die_with_parent = spec.die_with_parent;
  plan.own_netns = spec.netns_fd < 0;
  plan.hostname = spec.hostname.c_str();
  plan.hostname_len = spec.hostname.size();
  plan.root = spec.rootfs.mountpoint.c_str();
  plan.mounts = mounts.data();
  plan.mount_count = mounts.size();
  plan.keep_caps = caps_.bits;
  plan.last_cap = last_cap_;
  plan.seccomp = &default_seccomp_program();
  plan.init_argv = init_argv;
  plan.init_envp = init_envp;

  // The child shares our memory until it execs: `plan` and everything it points to, and the
  // stack, must outlive it. `child` is declared last so that on any error it is killed and
  // reaped before they go.
  Stack stack;
  sys::Pidfd child;
  int pidfd = -1;
  pid_t pid;
  {
    // The child inherits the network namespace of this thread.
    std::optional<sys::EnterNetns> in_box_netns;
    if (spec.netns_fd >= 0) in_box_netns.emplace(spec.netns_fd);
    sys::BlockAllSignals blocked;  // the child starts with every signal blocked
    pid =
        ::clone(child_main, stack.top(),
                CLONE_VM | CLONE_PIDFD | CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS |
                    CLONE_NEWIPC | SIGCHLD,  // CLONE_NEWNET: by the child or inherited
                &plan, &pidfd);
  }
  if (pid < 0) throw_errno("clone");
  child = sys::Pidfd(sys::UniqueFd(pidfd), pid);
  try {
    // The child holds its own copies of these now.
    sync_child.reset();
    channel_init.reset();
    log_write.reset();

    write_id_maps(pid, spec.ids);
    if (cgroup) cgroup->add_process(pid);
    std::string proc = "/proc/" + std::to_string(pid);
    // init's oom_score_adj is left alone: lowering it (with CAP_SYS_RESOURCE) would let every
    // process of the box lower its own as far, out of the host's OOM killer's reach.
    raise_open_files_limit(pid);
    sys::UniqueFd userns(::open((proc + "/ns/user").c_str(), O_RDONLY | O_CLOEXEC));
    if (!userns) throw_errno("opening the box's user namespace");
    sys::UniqueFd root =
        make_root_mount(spec.rootfs, spec.ids, userns.get(),
                        {{"hosts", spec.etc_hosts}, {"resolv.conf", spec.resolv_conf}});
    send_go(sync_parent.get(), root.get());
    wait_for_exec(sync_parent.get(), child);
  } catch (...) {
    child.kill_and_reap();
    throw;
  }
  return std::make_unique<ContainerBox>(spec.id, std::move(child), std::move(cgroup),
                                        std::move(channel_node), std::move(log_read));
}

std::unique_ptr<Box> ContainerRuntime::reattach(const BoxSpec& spec, sys::ProcessRef init) {
  // The pidfd is checked against the start time after it is opened: from then on the pid cannot
  // be recycled under us.
  sys::Pidfd pidfd;
  if (init.alive()) {
    try {
      pidfd = sys::Pidfd::open(init.pid);
    } catch (const Error&) {
    }
  }
  if (!pidfd.valid() || !init.alive()) {
    remove_leftovers(spec.id);
    return nullptr;
  }
  // Init may not have made its spare yet (it had just started) or be replacing it (another node
  // took it a moment ago): EBADF for a short while then.
  long fd = -1;
  for (int tries = 0; tries < 200; ++tries) {
    fd = ::syscall(SYS_pidfd_getfd, pidfd.fd(), proto::kSpareChannelFd, 0);
    if (fd >= 0 || errno != EBADF) break;
    ::usleep(5000);
  }
  if (fd < 0 && errno == ESRCH) {  // it ended just now
    remove_leftovers(spec.id);
    return nullptr;
  }
  if (fd < 0) throw_errno("taking the spare channel of box " + spec.id);
  sys::UniqueFd channel(static_cast<int>(fd));
  std::unique_ptr<sys::Cgroup> cgroup;
  if (cgroups_->exists(spec.id)) cgroup = cgroups_->open(spec.id);
  return std::make_unique<ContainerBox>(spec.id, std::move(pidfd), std::move(cgroup),
                                        std::move(channel), sys::UniqueFd());
}

void ContainerRuntime::remove_leftovers(const std::string& box_id) {
  if (cgroups_->exists(box_id)) cgroups_->open(box_id)->remove();
}

}  // namespace pitbox::runtime::container

// The container runtime: namespaces (user, mount, pid, uts, ipc, net, cgroup), an overlay root
// of id-mapped layers, cgroup limits, a small capability set, no_new_privs and seccomp.
#pragma once

#include <memory>
#include <string>

#include "runtime/runtime.h"
#include "sys/caps.h"
#include "sys/cgroup.h"

namespace pitbox::runtime::container {

class ContainerRuntime final : public Runtime {
 public:
  struct Options {
    std::string init_path;  // the pitbox-init binary
    std::string cgroup_parent = "pitbox";
  };
  explicit ContainerRuntime(Options options);
  ~ContainerRuntime() override;

  std::string_view name() const override { return "container"; }
  std::unique_ptr<Box> start(const BoxSpec& spec) override;
  std::unique_ptr<Box> reattach(const BoxSpec& spec, sys::ProcessRef init) override;
  void remove_leftovers(const std::string& box_id) override;
  sys::Cgroups& cgroups() { return *cgroups_; }

 private:
  Options options_;
  sys::UniqueFd init_fd_;
  std::unique_ptr<sys::Cgroups> cgroups_;
  sys::CapSet caps_;
  int last_cap_;
};

}  // namespace pitbox::runtime::container

#include "runtime/container/caps.h"

#include <linux/capability.h>
#include <sys/prctl.h>

#include "sys/raw_syscall.h"

namespace pitbox::runtime::container {

sys::CapSet default_capabilities() {
  sys::CapSet s;
  for (int cap :
       {CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, CAP_KILL, CAP_SETGID, CAP_SETUID,
        CAP_SETPCAP, CAP_NET_BIND_SERVICE, CAP_SYS_CHROOT, CAP_SETFCAP, CAP_AUDIT_WRITE}) {
    s.add(cap);
  }
  return s;
}

int child_drop_capabilities(uint64_t keep, int last_cap, ChildFailure* f) {
  using sys::raw::call;
  for (int cap = 0; cap <= last_cap; ++cap) {
    if ((keep >> cap) & 1) continue;
    long rc = call(SYS_prctl, PR_CAPBSET_DROP, cap, 0, 0, 0);
    if (rc < 0 && rc != -EINVAL) return child::fail(f, Step::capabilities, rc, "bounding set");
  }
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  data[0].effective = data[0].permitted = static_cast<uint32_t>(keep);
  data[1].effective = data[1].permitted = static_cast<uint32_t>(keep >> 32);
  long rc = call(SYS_capset, &header, data);
  if (rc < 0) return child::fail(f, Step::capabilities, rc, "capset");
  rc = call(SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
  if (rc < 0 && rc != -EINVAL) return child::fail(f, Step::capabilities, rc, "ambient set");
  return 0;
}

}  // namespace pitbox::runtime::container

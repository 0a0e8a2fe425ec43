#include "runtime/container/user.h"

#include <fcntl.h>

#include <string>

#include "sys/error.h"
#include "sys/fs.h"
#include "sys/raw_syscall.h"

namespace pitbox::runtime::container {

void write_id_maps(pid_t pid, const IdMapping& ids) {
  if (ids.host_base == 0 || ids.count == 0) {
    throw invalid_argument("a box's ids must map to a non-root host range");
  }
  std::string line = "0 " + std::to_string(ids.host_base) + " " + std::to_string(ids.count);
  std::string proc = "/proc/" + std::to_string(pid);
  for (const char* file : {"/uid_map", "/gid_map"}) {
    sys::UniqueFd fd(::open((proc + file).c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd || ::write(fd.get(), line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
      throw_errno(std::string("writing ") + file + " of the box");
    }
  }
}

int child_become_root(ChildFailure* f) {
  using sys::raw::call;
  long rc;
  if ((rc = call(SYS_setresgid, 0, 0, 0)) < 0)
    return child::fail(f, Step::become_root, rc, "gid 0");
  if ((rc = call(SYS_setresuid, 0, 0, 0)) < 0)
    return child::fail(f, Step::become_root, rc, "uid 0");
  if ((rc = call(SYS_setgroups, 0, 0)) < 0) return child::fail(f, Step::become_root, rc, "groups");
  return 0;
}

}  // namespace pitbox::runtime::container

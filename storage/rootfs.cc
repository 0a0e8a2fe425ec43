#include "storage/rootfs.h"

#include <sys/stat.h>

#include <cerrno>

#include "sys/error.h"

namespace pitbox::storage {

WritableLayer create_writable_layer(const std::string& box_dir) {
  WritableLayer layer{box_dir + "/upper", box_dir + "/work"};
  for (const auto& d : {layer.upper, layer.work}) {
    if (::mkdir(d.c_str(), 0755) != 0) throw_errno("mkdir " + d);
    // The upper directory's mode is the box root's mode; the umask must not change it.
    if (::chmod(d.c_str(), 0755) != 0) throw_errno("chmod " + d);
  }
  return layer;
}

}  // namespace pitbox::storage

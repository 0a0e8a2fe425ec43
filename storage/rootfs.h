// A box's writable layer on disk. The overlay driver keeps it as two plain directories (the
// upper layer and overlayfs's work directory); a btrfs driver will keep a subvolume.
#pragma once

#include <string>

namespace pitbox::storage {

struct WritableLayer {
  std::string upper;
  std::string work;
};

// Makes the writable layer of a box under `box_dir`. Its files are stored with the box's own
// ids (uid 0 = the box's root), like image layers.
WritableLayer create_writable_layer(const std::string& box_dir);

}  // namespace pitbox::storage

// Images a box can start from: a content-addressed store of OCI images (layers and manifests
// addressed by sha256, tags "name:tag") under <state>/images, and the built-in "host" image
// (the host's /usr bound read-only with a fresh /etc; see docs/security.md).
//
//   images/blobs/sha256/<hex>    layer archives, configs and manifests, as imported or made
//   images/layers/sha256/<hex>   unpacked layers by diff id (read-only lower layers of boxes)
//   images/index.json            the images (manifest digests) and their tags
//   images/tmp/                  work in progress (emptied when the daemon starts)
//
// "busybox" is made from the host's static busybox on first use and stored like any image.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "runtime/runtime.h"

namespace pitbox::storage {

struct ImageConfig {
  std::vector<std::string> env;  // "KEY=value"
  std::string workdir = "/";
  std::string user;  // "" = root
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  std::vector<std::string> shell;  // for RUN in builds; default /bin/sh -c
  std::map<std::string, std::string> labels;
  std::vector<std::string> exposed_ports;  // "8000/tcp"
};

struct Image {
  std::string id;                    // "sha256:<manifest digest>", or the name of a built-in image
  std::string name;                  // the reference it was asked by
  std::vector<std::string> layers;   // directories, topmost first
  std::vector<runtime::Bind> binds;  // host paths the image needs at run time
  ImageConfig config;
};

// A layer of an image as its manifest and config name it.
struct LayerDesc {
  std::string media_type;
  std::string digest;   // of the blob as stored
  std::string diff_id;  // of the uncompressed tar
  uint64_t size = 0;    // of the blob
};

// What an image is made of: its layers (bottom first) and its OCI config document.
struct ImageDoc {
  std::vector<LayerDesc> layers;
  nlohmann::json config;
};

struct ImageInfo {
  std::string id;
  std::vector<std::string> tags;
  bool builtin = false;
  int64_t created_ms = 0;
  uint64_t size = 0;  // of its blobs
  std::vector<LayerDesc> layers;
  ImageConfig config;
  nlohmann::json to_json() const;
};

// What uses an image (by id) outside the store ("sandbox 3fk2...", a snapshot, a build), or ""
// when nothing does.
using InUse = std::function<std::string(const std::string& id)>;

class ImageStore {
 public:
  explicit ImageStore(std::string state_dir);

  // The image `ref` names, ready to run: a tag ("name" means "name:latest"), an id
  // ("sha256:<hex>", or at least 12 hex digits of it) or a built-in name. not_found naming the
  // reference otherwise.
  Image get(const std::string& ref);
  // The id of the image `ref` names (not_found when none).
  std::string resolve(const std::string& ref);
  bool exists(const std::string& ref);
  ImageInfo inspect(const std::string& ref);
  // Every image, newest first.
  std::vector<ImageInfo> list();
  ImageDoc doc(const std::string& ref);
  // The names a box can be made from, for messages.
  std::vector<std::string> names();

  // Gives the image `ref` names the tag `tag` too (moved from another image if it had it).
  std::string tag(const std::string& ref, const std::string& tag);
  struct Removed {
    std::vector<std::string> untagged;
    std::vector<std::string> deleted;
  };
  // A tag: removes the tag, and the image when it was its last. An id: removes the image and
  // its tags. conflict when the image would go but `in_use` says something uses it.
  Removed remove(const std::string& ref, const InUse& in_use);
  struct Pruned {
    std::vector<std::string> images;
    size_t layers = 0;
    uint64_t bytes = 0;
  };
  // Removes images without tags that nothing uses, then blobs and layers no image needs.
  Pruned prune(const InUse& in_use);

  // Adds a layer from an archive (plain, gzip or zstd tar) read from `fd`, unpacked and kept as
  // its blob. `expect_digest` / `expect_diff_id`, when not empty, must match what was read.
  LayerDesc add_layer(int fd, const std::string& expect_digest = "",
                      const std::string& expect_diff_id = "");
  // Adds the directory `dir` (an overlay upper directory) as a layer: packed as tar+zstd and
  // unpacked again into the store (so that the layer holds exactly what its blob says).
  LayerDesc add_layer_from_dir(const std::string& dir);
  // Stores `doc` (its config's rootfs is made to match its layers, which must be in the store)
  // as an image with `tags`; returns its id.
  std::string put(ImageDoc doc, const std::vector<std::string>& tags);
  // Adds a blob from memory; returns its digest.
  std::string put_blob(std::string_view data);
  std::string blob_path(const std::string& digest) const;
  std::string layer_path(const std::string& diff_id) const;

  // Imports a `docker save` archive or an OCI image layout, a tar (maybe compressed) read from
  // `fd` or a directory. Each image is tagged with the tags the archive gives, and with `tag`
  // when one is given (only for an archive with one image). Returns the ids imported.
  std::vector<std::string> import_archive(int fd, const std::string& tag);
  std::vector<std::string> import_dir(const std::string& dir, const std::string& tag);
  // Writes the image as an OCI image layout in a tar (with Docker's manifest.json too, so that
  // `docker load` takes it) to `out_fd`.
  void export_archive(const std::string& ref, int out_fd);

  // For the daemon, at start: makes the store's directories and removes what a crashed daemon
  // left half made in images/tmp (never done by `pitbox run`, which may run beside a daemon).
  void prepare();
  // A new, empty directory under images/tmp for work in progress; the caller removes it.
  std::string make_tmp_dir(const std::string& what);
  const std::string& dir() const { return dir_; }

  // Checks a tag ("name" or "name:tag"): invalid_argument naming what is wrong. Returns it with
  // ":latest" added when it has no tag.
  static std::string normalize_tag(const std::string& tag);

 private:
  struct Entry {
    std::string id;
    int64_t created_ms = 0;
  };
  Image builtin_host();
  std::string ensure_busybox();
  class IndexLock;
  void ensure_dirs();
  void load_index();  // replaces images_ and tags_ with the file's (under mu_)
  void save_index();  // under mu_ and an IndexLock
  // The id `ref` names, under mu_; "" when none.
  std::string find(const std::string& ref);
  void need_index();  // under mu_
  Image load(const std::string& id);
  // Registers the manifest `manifest` (whose config and layers are in the store) with `tags`.
  std::string register_manifest(const std::string& manifest, const std::vector<std::string>& tags);
  // Removes blobs and layers that no image needs and nobody is adding (under mu_).
  std::pair<size_t, uint64_t> collect_garbage();
  std::vector<std::string> import_one(int dirfd, const nlohmann::json& manifest_desc,
                                      std::vector<LayerDesc>& added);
  ImageInfo info(const std::string& id);
  std::string ensure_builtin_layer(const std::string& name, const std::string& fingerprint,
                                   void (*fill)(const std::string& dir));

  std::string state_dir_;
  std::string dir_;  // <state>/images
  std::mutex mu_;
  std::map<std::string, Entry> images_;      // by id
  std::map<std::string, std::string> tags_;  // "name:tag" -> id
  bool index_loaded_ = false;
  std::set<std::string> pinned_layers_;  // being added: prune leaves them alone
  std::map<std::string, Image> loaded_;  // by id (images never change)
  // The host image checked a moment ago: a burst of creates checks once.
  std::optional<std::pair<Image, std::chrono::steady_clock::time_point>> host_;
  std::chrono::steady_clock::time_point busybox_checked_;
};

// "sha256:<64 hex>" -> "<64 hex>"; invalid_argument naming it otherwise.
std::string digest_hex(const std::string& digest);
constexpr const char* kOciManifestType = "application/vnd.oci.image.manifest.v1+json";
// The OCI manifest of an image with config document `config` (as stored) and `layers`.
std::string oci_manifest(const std::string& config, const std::vector<LayerDesc>& layers);

// Whether an ELF file is statically linked (has no program interpreter).
bool is_static_elf(const std::string& path);

// The built-in images' trees (storage/builtin_images.cc).
void fill_busybox(const std::string& dir);
void fill_host(const std::string& dir);
// Changes when the host files an image is made of change.
std::string host_fingerprint(const std::vector<std::string>& paths);
const std::vector<std::string>& host_etc_allowlist();
const std::vector<std::string>& host_lib_dirs();
extern const char* const kBusyboxBinary;
extern const char* const kDefaultPath;

// The OCI config document's "config" section <-> ImageConfig.
ImageConfig config_from_oci(const nlohmann::json& config_doc);
void config_to_oci(const ImageConfig& c, nlohmann::json& config_doc);

}  // namespace pitbox::storage

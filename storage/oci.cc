// Image archives in and out: `docker save` archives (manifest.json, config and layer.tar files;
// Docker 25 and later write an OCI layout beside it) and OCI image layouts (oci-layout,
// index.json, blobs/sha256/...), as tars or directories. Everything read comes from a user and
// is checked: paths stay inside the archive, every blob matches its digest, every layer its
// diff id, and an image is registered only once all of it is in the store.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <set>

#include "storage/images.h"
#include "storage/layer.h"
#include "storage/tar_writer.h"
#include "sys/error.h"
#include "sys/fs.h"
#include "sys/text.h"

namespace pitbox::storage {

using nlohmann::json;

namespace {

constexpr size_t kMaxDocument = 4u << 20;
constexpr const char* kIndexType = "application/vnd.oci.image.index.v1+json";
constexpr const char* kDockerListType = "application/vnd.docker.distribution.manifest.list.v2+json";

// A file of the archive, opened inside it: symlinks (old `docker save` archives link layers
// to each other) resolve within the archive, never out of it.
sys::UniqueFd open_member(int rootfd, const std::string& path) {
  if (path.empty()) throw invalid_argument("image archive: an empty path");
  sys::UniqueFd fd = sys::open_in_root(rootfd, path, O_RDONLY | O_CLOEXEC);
  if (!fd) {
    int err = errno;
    throw Error(ErrorCode::invalid_argument,
                "image archive: cannot open \"" + path + "\": " + std::strerror(err),
                {{"path", path}});
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    throw Error(ErrorCode::invalid_argument, "image archive: \"" + path + "\" is not a file",
                {{"path", path}});
  }
  return fd;
}

std::string read_member(int rootfd, const std::string& path) {
  sys::UniqueFd fd = open_member(rootfd, path);
  std::string data = sys::read_fd(fd.get(), kMaxDocument + 1);
  if (data.size() > kMaxDocument) {
    throw invalid_argument("image archive: \"" + path + "\" is too large for a manifest or config");
  }
  return data;
}

json parse_member(const std::string& data, const std::string& path) {
  json j = json::parse(data, nullptr, false);
  if (j.is_discarded()) {
    throw Error(ErrorCode::invalid_argument, "image archive: \"" + path + "\" is not valid JSON",
                {{"path", path}});
  }
  return j;
}

std::string blob_member(const std::string& digest) { return "blobs/sha256/" + digest_hex(digest); }

// A blob of an OCI layout, checked against its digest.
std::string read_blob(int rootfd, const std::string& digest) {
  std::string path = blob_member(digest);
  std::string data = read_member(rootfd, path);
  if ("sha256:" + sys::sha256_hex(data) != digest) {
    throw Error(ErrorCode::invalid_argument,
                "image archive: blob " + digest + " does not match its content",
                {{"digest", digest}});
  }
  return data;
}

std::vector<std::string> diff_ids_of(const json& config, const std::string& what) {
  std::vector<std::string> out;
  if (!config.is_object() || !config.contains("rootfs") || !config["rootfs"].is_object() ||
      !config["rootfs"].contains("diff_ids") || !config["rootfs"]["diff_ids"].is_array()) {
    throw invalid_argument("image archive: " + what + " has no rootfs.diff_ids");
  }
  for (const auto& d : config["rootfs"]["diff_ids"]) {
    if (!d.is_string()) throw invalid_argument("image archive: " + what + ": bad diff id");
    out.push_back(d);
  }
  return out;
}

// The name an OCI index entry gives its image, if any.
std::string name_of(const json& desc) {
  if (!desc.contains("annotations") || !desc["annotations"].is_object()) return "";
  const json& a = desc["annotations"];
  if (a.contains("io.containerd.image.name") && a["io.containerd.image.name"].is_string()) {
    std::string n = a["io.containerd.image.name"];
    // containerd's full names ("docker.io/library/x:1") lose the default registry.
    for (const char* prefix : {"docker.io/library/", "docker.io/"}) {
      if (n.rfind(prefix, 0) == 0) n = n.substr(std::strlen(prefix));
    }
    return n;
  }
  if (a.contains("org.opencontainers.image.ref.name") &&
      a["org.opencontainers.image.ref.name"].is_string()) {
    std::string n = a["org.opencontainers.image.ref.name"];
    if (n.find(':') != std::string::npos) return n;  // a bare tag names no image
  }
  return "";
}

}  // namespace

std::vector<std::string> ImageStore::import_archive(int fd, const std::string& tag) {
  std::string tmp = make_tmp_dir("import");
  try {
    std::string root = tmp + "/archive";
    if (::mkdir(root.c_str(), 0700) != 0) throw_errno("mkdir " + root);
    try {
      unpack_layer(fd, root);
    } catch (const Error& e) {
      throw Error(e.code(), "image archive: " + e.message(), e.details());
    }
    auto ids = import_dir(root, tag);
    sys::remove_tree(tmp);
    return ids;
  } catch (...) {
    sys::remove_tree(tmp);
    throw;
  }
}

std::vector<std::string> ImageStore::import_dir(const std::string& dir, const std::string& tag) {
  sys::UniqueFd root(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) throw_errno("open " + dir);
  std::string extra_tag = tag.empty() ? "" : normalize_tag(tag);
  // Every image of the archive, as (manifest bytes or "", config bytes, layer files, tags).
  struct Found {
    std::string manifest;  // an OCI manifest kept as it is; "" for docker's legacy entries
    std::string config;
    std::vector<std::pair<std::string, LayerDesc>> layers;  // (member path, expected)
    std::vector<std::string> tags;
  };
  std::vector<Found> found;
  bool oci = sys::exists(dir + "/index.json") && sys::exists(dir + "/oci-layout");
  if (oci) {
    json index = parse_member(read_member(root.get(), "index.json"), "index.json");
    std::vector<std::pair<json, std::string>> todo;  // (descriptor, its name)
    if (!index.contains("manifests") || !index["manifests"].is_array()) {
      throw invalid_argument("image archive: index.json has no manifests");
    }
    for (const auto& d : index["manifests"]) todo.push_back({d, name_of(d)});
    for (size_t i = 0; i < todo.size(); ++i) {
      json desc = todo[i].first;
      if (!desc.is_object() || !desc.contains("digest") || !desc["digest"].is_string()) {
        throw invalid_argument("image archive: a manifest entry has no digest");
      }
      std::string media = desc.value("mediaType", "");
      std::string data = read_blob(root.get(), desc["digest"]);
      json doc = parse_member(data, blob_member(desc["digest"]));
      if (media == kIndexType || media == kDockerListType || doc.contains("manifests")) {
        // A multi-platform image: the linux/amd64 one (or one without a platform).
        for (const auto& m : doc.value("manifests", json::array())) {
          json p = m.value("platform", json::object());
          if (p.value("os", "linux") == "linux" && p.value("architecture", "amd64") == "amd64") {
            todo.push_back({m, todo[i].second});
            break;
          }
        }
        continue;
      }
      if (!doc.contains("config") || !doc["config"].is_object() || !doc.contains("layers") ||
          !doc["layers"].is_array()) {
        throw invalid_argument("image archive: manifest " + desc["digest"].get<std::string>() +
                               " has no config or layers");
      }
      Found f;
      f.manifest = data;
      f.config = read_blob(root.get(), doc["config"].value("digest", ""));
      auto diff_ids = diff_ids_of(parse_member(f.config, "config"), "the config");
      if (diff_ids.size() != doc["layers"].size()) {
        throw invalid_argument("image archive: the manifest has " +
                               std::to_string(doc["layers"].size()) + " layers, its config " +
                               std::to_string(diff_ids.size()));
      }
      for (size_t l = 0; l < diff_ids.size(); ++l) {
        const json& ld = doc["layers"][l];
        LayerDesc want;
        want.digest = ld.value("digest", "");
        want.diff_id = diff_ids[l];
        want.media_type = ld.value("mediaType", "");
        compression_of_media_type(want.media_type);  // refuses what we cannot unpack
        f.layers.push_back({blob_member(want.digest), want});
      }
      if (std::string n = todo[i].second; !n.empty()) f.tags.push_back(normalize_tag(n));
      found.push_back(std::move(f));
    }
  } else if (sys::exists(dir + "/manifest.json")) {
    json list = parse_member(read_member(root.get(), "manifest.json"), "manifest.json");
    if (!list.is_array()) throw invalid_argument("image archive: manifest.json is not a list");
    for (const auto& e : list) {
      if (!e.is_object() || !e.contains("Config") || !e["Config"].is_string() ||
          !e.contains("Layers") || !e["Layers"].is_array()) {
        throw invalid_argument("image archive: a manifest.json entry lacks Config or Layers");
      }
      Found f;
      std::string config_path = e["Config"];
      f.config = read_member(root.get(), config_path);
      // Docker names a config after its digest: a mismatch is a damaged archive.
      std::string base = config_path.substr(config_path.rfind('/') + 1);
      if (base.size() >= 64 && base.find_first_not_of("0123456789abcdef") >= 64 &&
          base.substr(0, 64) != sys::sha256_hex(f.config)) {
        throw Error(ErrorCode::invalid_argument,
                    "image archive: config " + config_path + " does not match its digest",
                    {{"path", config_path}});
      }
      auto diff_ids = diff_ids_of(parse_member(f.config, config_path), config_path);
      if (diff_ids.size() != e["Layers"].size()) {
        throw invalid_argument("image archive: " + config_path + " names " +
                               std::to_string(diff_ids.size()) + " layers, manifest.json " +
                               std::to_string(e["Layers"].size()));
      }
      for (size_t l = 0; l < diff_ids.size(); ++l) {
        if (!e["Layers"][l].is_string()) throw invalid_argument("image archive: bad layer path");
        LayerDesc want;
        want.diff_id = diff_ids[l];
        f.layers.push_back({e["Layers"][l].get<std::string>(), want});
      }
      for (const auto& t : e.value("RepoTags", json::array())) {
        if (t.is_string()) f.tags.push_back(normalize_tag(t));
      }
      found.push_back(std::move(f));
    }
  } else {
    throw invalid_argument(
        "not an image archive: it has neither index.json and oci-layout (an OCI image layout) "
        "nor manifest.json (docker save)");
  }
  if (found.empty()) throw invalid_argument("image archive: it holds no image");
  if (!extra_tag.empty()) {
    if (found.size() > 1) {
      throw invalid_argument("image archive: it holds " + std::to_string(found.size()) +
                             " images; a tag can only be given to one");
    }
    found[0].tags.push_back(extra_tag);
  }
  // Everything in, then registered: a failure leaves no image behind, and the layers it added
  // go with the next collection.
  std::vector<std::string> ids;
  std::vector<std::string> added;
  try {
    for (auto& f : found) {
      std::vector<LayerDesc> layers;
      for (const auto& [path, want] : f.layers) {
        sys::UniqueFd fd = open_member(root.get(), path);
        LayerDesc got;
        try {
          got = add_layer(fd.get(), want.digest, want.diff_id);
        } catch (const Error& e) {
          throw Error(e.code(), "image archive: layer " + path + ": " + e.message(), e.details());
        }
        added.push_back(got.diff_id);
        if (!want.media_type.empty()) got.media_type = want.media_type;
        layers.push_back(got);
      }
      put_blob(f.config);
      // A legacy docker entry gets an OCI manifest; its config is kept byte for byte.
      if (f.manifest.empty()) f.manifest = oci_manifest(f.config, layers);
      ids.push_back(register_manifest(f.manifest, f.tags));
    }
  } catch (...) {
    std::lock_guard lock(mu_);
    for (const auto& d : added) pinned_layers_.erase(d);
    collect_garbage();
    throw;
  }
  return ids;
}

void ImageStore::export_archive(const std::string& ref, int out_fd) {
  std::string id = resolve(ref);
  ImageDoc d = doc(id);  // refuses the host image
  ImageInfo i = info(id);
  json manifest = json::parse(sys::read_file(blob_path(id)));
  std::string config_digest = manifest["config"]["digest"];
  auto put_file = [&](const std::string& name, std::string_view data) {
    TarEntry e;
    e.name = name;
    e.mode = 0644;
    e.size = data.size();
    if (!sys::write_all(out_fd, tar_header(e)) || !sys::write_all(out_fd, data) ||
        !sys::write_all(out_fd, tar_padding(data.size()))) {
      throw_errno("writing the image archive");
    }
  };
  auto put_dir = [&](const std::string& name) {
    TarEntry e;
    e.type = TarEntry::Type::dir;
    e.name = name;
    e.mode = 0755;
    if (!sys::write_all(out_fd, tar_header(e))) throw_errno("writing the image archive");
  };
  auto put_blob_file = [&](const std::string& digest) {
    std::string path = blob_path(digest);
    sys::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw_errno("open " + path);
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) throw_errno("stat " + path);
    TarEntry e;
    e.name = blob_member(digest);
    e.mode = 0644;
    e.size = static_cast<uint64_t>(st.st_size);
    if (!sys::write_all(out_fd, tar_header(e))) throw_errno("writing the image archive");
    char buf[1 << 16];
    uint64_t left = e.size;
    while (left > 0) {
      ssize_t n = ::read(fd.get(), buf, std::min<uint64_t>(sizeof buf, left));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw_errno("read " + path);
      if (!sys::write_all(out_fd, std::string_view(buf, static_cast<size_t>(n))))
        throw_errno("writing the image archive");
      left -= static_cast<uint64_t>(n);
    }
    if (!sys::write_all(out_fd, tar_padding(e.size))) throw_errno("writing the image archive");
  };
  json index_manifests = json::array();
  json repo_tags = json::array();
  std::string manifest_bytes = sys::read_file(blob_path(id));
  json entry = {{"mediaType", kOciManifestType}, {"digest", id}, {"size", manifest_bytes.size()}};
  if (!i.tags.empty()) {
    const std::string& t = i.tags.front();
    entry["annotations"] = {{"io.containerd.image.name", t},
                            {"org.opencontainers.image.ref.name", t.substr(t.rfind(':') + 1)}};
  }
  for (const auto& t : i.tags) repo_tags.push_back(t);
  index_manifests.push_back(entry);
  json index = {{"schemaVersion", 2}, {"mediaType", kIndexType}, {"manifests", index_manifests}};
  json layer_paths = json::array();
  for (const auto& l : d.layers) layer_paths.push_back(blob_member(l.digest));
  json docker = json::array(
      {{{"Config", blob_member(config_digest)}, {"RepoTags", repo_tags}, {"Layers", layer_paths}}});
  put_file("oci-layout", R"({"imageLayoutVersion":"1.0.0"})");
  put_file("index.json", index.dump());
  put_file("manifest.json", docker.dump());
  put_dir("blobs/");
  put_dir("blobs/sha256/");
  std::set<std::string> written;
  for (const auto& digest : {id, config_digest}) {
    if (written.insert(digest).second) put_blob_file(digest);
  }
  for (const auto& l : d.layers) {
    if (written.insert(l.digest).second) put_blob_file(l.digest);
  }
  if (!sys::write_all(out_fd, tar_end())) throw_errno("writing the image archive");
}

}  // namespace pitbox::storage

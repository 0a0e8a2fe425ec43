#include "storage/images.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <regex>

#include "storage/layer.h"
#include "sys/error.h"
#include "sys/fs.h"
#include "sys/random.h"
#include "sys/text.h"

namespace pitbox::storage {

using nlohmann::json;

namespace {

constexpr const char* kConfigType = "application/vnd.oci.image.config.v1+json";

// A reference as a tag key: ":latest" added when it names no tag. Not checked: stored tags are
// valid, so a bad reference only finds nothing (and the lookup stays cheap on every create).
std::string with_tag(const std::string& ref) {
  size_t colon = ref.rfind(':');
  bool tagged = colon != std::string::npos && ref.find('/', colon) == std::string::npos;
  return tagged ? ref : ref + ":latest";
}

bool is_hex(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

int64_t parse_created(const json& config) {
  // RFC 3339 to ms, seconds resolution is enough for sorting.
  if (!config.contains("created") || !config["created"].is_string()) return 0;
  std::string t = config["created"];
  struct tm tm = {};
  if (!::strptime(t.c_str(), "%Y-%m-%dT%H:%M:%S", &tm)) return 0;
  return static_cast<int64_t>(::timegm(&tm)) * 1000;
}

std::vector<std::string> string_array(const json& j) {
  std::vector<std::string> out;
  if (!j.is_array()) return out;
  for (const auto& v : j)
    if (v.is_string()) out.push_back(v);
  return out;
}

}  // namespace

std::string digest_hex(const std::string& digest) {
  if (digest.rfind("sha256:", 0) != 0 || digest.size() != 71 || !is_hex(digest.substr(7))) {
    throw invalid_argument("bad digest \"" + digest + "\" (expected sha256:<64 hex digits>)");
  }
  return digest.substr(7);
}

// ---------------------------------------------------------------------------------------------
// Config documents

ImageConfig config_from_oci(const json& doc) {
  ImageConfig c;
  const json& cfg = doc.contains("config") && doc["config"].is_object() ? doc["config"] : json();
  if (!cfg.is_object()) return c;
  c.env = string_array(cfg.value("Env", json()));
  if (cfg.contains("WorkingDir") && cfg["WorkingDir"].is_string() &&
      !cfg["WorkingDir"].get<std::string>().empty())
    c.workdir = cfg["WorkingDir"];
  if (cfg.contains("User") && cfg["User"].is_string()) c.user = cfg["User"];
  c.entrypoint = string_array(cfg.value("Entrypoint", json()));
  c.cmd = string_array(cfg.value("Cmd", json()));
  c.shell = string_array(cfg.value("Shell", json()));
  if (cfg.contains("Labels") && cfg["Labels"].is_object()) {
    for (const auto& [k, v] : cfg["Labels"].items())
      if (v.is_string()) c.labels[k] = v;
  }
  if (cfg.contains("ExposedPorts") && cfg["ExposedPorts"].is_object()) {
    for (const auto& [k, v] : cfg["ExposedPorts"].items()) c.exposed_ports.push_back(k);
  }
  return c;
}

void config_to_oci(const ImageConfig& c, json& doc) {
  json cfg = json::object();
  if (!c.env.empty()) cfg["Env"] = c.env;
  if (!c.workdir.empty() && c.workdir != "/") cfg["WorkingDir"] = c.workdir;
  if (!c.user.empty()) cfg["User"] = c.user;
  if (!c.entrypoint.empty()) cfg["Entrypoint"] = c.entrypoint;
  if (!c.cmd.empty()) cfg["Cmd"] = c.cmd;
  if (!c.shell.empty()) cfg["Shell"] = c.shell;
  if (!c.labels.empty()) cfg["Labels"] = c.labels;
  if (!c.exposed_ports.empty()) {
    json ports = json::object();
    for (const auto& p : c.exposed_ports) ports[p] = json::object();
    cfg["ExposedPorts"] = ports;
  }
  doc["config"] = cfg;
}

json ImageInfo::to_json() const {
  json layers_doc = json::array();
  for (const auto& l : layers) {
    layers_doc.push_back({{"digest", l.digest},
                          {"diff_id", l.diff_id},
                          {"size", l.size},
                          {"media_type", l.media_type}});
  }
  json ports = config.exposed_ports;
  json cfg = {{"env", config.env},     {"workdir", config.workdir},
              {"user", config.user},   {"entrypoint", config.entrypoint},
              {"cmd", config.cmd},     {"labels", config.labels},
              {"exposed_ports", ports}};
  return {{"id", id},
          {"name", tags.empty() ? id : tags.front()},
          {"tags", tags},
          {"builtin", builtin},
          {"created_at", created_ms ? json(sys::format_time(created_ms)) : json()},
          {"size", size},
          {"layers", layers_doc},
          {"config", cfg}};
}

// ---------------------------------------------------------------------------------------------
// The store

ImageStore::ImageStore(std::string state_dir)
    : state_dir_(std::move(state_dir)), dir_(state_dir_ + "/images") {}

void ImageStore::need_index() {
  // Read on first need: a `pitbox run` of the host image never reads it.
  if (!index_loaded_) load_index();
}

std::string ImageStore::normalize_tag(const std::string& tag) {
  // Docker's reference grammar, without registries' host:port prefixes and digests.
  static const std::regex name_re(
      "[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*");
  static const std::regex tag_re("[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}");
  std::string name = tag, version = "latest";
  size_t colon = tag.rfind(':');
  if (colon != std::string::npos && tag.find('/', colon) == std::string::npos) {
    name = tag.substr(0, colon);
    version = tag.substr(colon + 1);
  }
  json details = {{"field", "tag"}, {"value", tag}};
  if (name.empty() || name.size() > 255 || !std::regex_match(name, name_re)) {
    throw invalid_argument("bad image name \"" + name +
                               "\": lower-case letters, digits and separators (. _ - /) only, "
                               "starting and ending with a letter or digit",
                           details);
  }
  if (!std::regex_match(version, tag_re)) {
    throw invalid_argument("bad image tag \"" + version +
                               "\": letters, digits, _ . - only, at most 128, not starting "
                               "with . or -",
                           details);
  }
  return name + ":" + version;
}

void ImageStore::ensure_dirs() {
  for (const char* d : {"", "/blobs/sha256", "/layers/sha256", "/tmp"})
    sys::make_dirs(dir_ + d, 0700);
}

void ImageStore::prepare() {
  ensure_dirs();
  // What a crashed daemon was in the middle of.
  for (const auto& e : sys::read_dir(dir_ + "/tmp")) sys::remove_tree(dir_ + "/tmp/" + e.name);
}

// Another process (`pitbox run` making busybox) may change the index too: every change is a
// read-modify-write of the file under an exclusive lock.
class ImageStore::IndexLock {
 public:
  explicit IndexLock(ImageStore& store) {
    store.ensure_dirs();
    std::string path = store.dir_ + "/index.lock";
    fd_ = sys::UniqueFd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!fd_) throw_errno("open " + path);
    while (::flock(fd_.get(), LOCK_EX) != 0) {
      if (errno != EINTR) throw_errno("lock " + path);
    }
    store.load_index();
  }

 private:
  sys::UniqueFd fd_;  // closing it unlocks
};

void ImageStore::load_index() {
  images_.clear();
  tags_.clear();
  index_loaded_ = true;
  std::string path = dir_ + "/index.json";
  if (!sys::exists(path)) return;
  json doc = json::parse(sys::read_file(path), nullptr, false);
  if (!doc.is_object()) throw internal_error(path + " is not valid JSON");
  for (const auto& i : doc.value("images", json::array())) {
    Entry e{i.value("id", ""), i.value("created", int64_t{0})};
    if (!e.id.empty()) images_[e.id] = e;
  }
  json tags = doc.value("tags", json::object());  // items() of a temporary would dangle
  for (const auto& [tag, id] : tags.items()) {
    if (id.is_string() && images_.count(id)) tags_[tag] = id;
  }
}

void ImageStore::save_index() {
  json images = json::array();
  for (const auto& [id, e] : images_) images.push_back({{"id", id}, {"created", e.created_ms}});
  json doc = {{"images", images}, {"tags", tags_}};
  sys::write_file_atomic(dir_ + "/index.json", doc.dump(1), 0600);
}

std::string ImageStore::blob_path(const std::string& digest) const {
  return dir_ + "/blobs/sha256/" + digest_hex(digest);
}

std::string ImageStore::layer_path(const std::string& diff_id) const {
  return dir_ + "/layers/sha256/" + digest_hex(diff_id);
}

std::string ImageStore::make_tmp_dir(const std::string& what) {
  ensure_dirs();
  std::string d = dir_ + "/tmp/" + what + "-" + sys::random_base32(10);
  if (::mkdir(d.c_str(), 0700) != 0) throw_errno("mkdir " + d);
  return d;
}

std::string ImageStore::find(const std::string& ref) {
  if (ref.empty()) return "";
  need_index();
  std::string hex = ref.rfind("sha256:", 0) == 0 ? ref.substr(7) : "";
  if (!hex.empty() || (ref.size() >= 12 && ref.size() <= 64 && is_hex(ref))) {
    if (hex.empty()) hex = ref;
    if (hex.size() >= 12 && is_hex(hex)) {
      std::string found;
      for (auto it = images_.lower_bound("sha256:" + hex);
           it != images_.end() && it->first.compare(7, hex.size(), hex) == 0; ++it) {
        if (!found.empty()) return "";  // ambiguous
        found = it->first;
      }
      if (!found.empty()) return found;
    }
    if (ref.rfind("sha256:", 0) == 0) return "";
  }
  auto it = tags_.find(with_tag(ref));
  return it == tags_.end() ? "" : it->second;
}

std::vector<std::string> ImageStore::names() {
  std::vector<std::string> out = {"host", "busybox"};
  std::lock_guard lock(mu_);
  need_index();
  for (const auto& [tag, id] : tags_) {
    std::string short_name = tag.size() > 7 && tag.compare(tag.size() - 7, 7, ":latest") == 0
                                 ? tag.substr(0, tag.size() - 7)
                                 : tag;
    if (short_name != "busybox") out.push_back(short_name);
  }
  return out;
}

std::string ImageStore::resolve(const std::string& ref) {
  if (ref == "host") return "host";
  if (ref == "busybox" || ref == "busybox:latest") return ensure_busybox();
  std::lock_guard lock(mu_);
  std::string id = find(ref);
  if (id.empty()) {
    load_index();  // another process may have added it
    id = find(ref);
  }
  if (id.empty()) {
    std::string known;
    size_t n = 0;
    for (const auto& [tag, unused] : tags_) {
      if (++n > 20) break;
      known += ", " + tag;
    }
    throw Error(ErrorCode::not_found,
                "image \"" + ref + "\" not found (available: host, busybox" + known + ")",
                {{"image", ref}});
  }
  return id;
}

bool ImageStore::exists(const std::string& ref) {
  if (ref == "host" || ref == "busybox" || ref == "busybox:latest") return true;
  std::lock_guard lock(mu_);
  return !find(ref).empty();
}

Image ImageStore::get(const std::string& ref) {
  if (ref == "host") return builtin_host();
  Image img = load(resolve(ref));
  img.name = ref;
  return img;
}

ImageDoc ImageStore::doc(const std::string& ref) {
  std::string id = resolve(ref);
  if (id == "host") {
    throw invalid_argument(
        "the host image is built in (it binds the host's /usr) and has no layers to build on or "
        "export");
  }
  json manifest = json::parse(sys::read_file(blob_path(id)));
  ImageDoc d;
  d.config = json::parse(sys::read_file(blob_path(manifest["config"]["digest"])));
  auto diff_ids = string_array(d.config["rootfs"]["diff_ids"]);
  const json& layers = manifest["layers"];
  for (size_t i = 0; i < layers.size(); ++i) {
    LayerDesc l;
    l.media_type = layers[i].value("mediaType", "");
    l.digest = layers[i].value("digest", "");
    l.size = layers[i].value("size", uint64_t{0});
    l.diff_id = i < diff_ids.size() ? diff_ids[i] : "";
    d.layers.push_back(l);
  }
  return d;
}

Image ImageStore::load(const std::string& id) {
  {
    std::lock_guard lock(mu_);
    if (auto it = loaded_.find(id); it != loaded_.end()) return it->second;
  }
  ImageDoc d = doc(id);
  Image img;
  img.id = id;
  img.config = config_from_oci(d.config);
  if (img.config.env.empty()) img.config.env = {kDefaultPath};
  for (auto it = d.layers.rbegin(); it != d.layers.rend(); ++it) {
    std::string path = layer_path(it->diff_id);
    if (!sys::is_dir(path)) {
      throw internal_error("layer " + it->diff_id + " of image " + id + " is missing from " + dir_ +
                           "/layers");
    }
    img.layers.push_back(path);
  }
  std::lock_guard lock(mu_);
  loaded_[id] = img;
  return img;
}

ImageInfo ImageStore::info(const std::string& id) {
  ImageInfo i;
  i.id = id;
  if (id == "host") {
    i.builtin = true;
    i.tags = {"host"};
    i.config = builtin_host().config;
    return i;
  }
  ImageDoc d = doc(id);
  i.layers = d.layers;
  i.config = config_from_oci(d.config);
  for (const auto& l : d.layers) i.size += l.size;
  std::lock_guard lock(mu_);
  need_index();
  for (const auto& [tag, tid] : tags_)
    if (tid == id) i.tags.push_back(tag);
  if (auto it = images_.find(id); it != images_.end()) i.created_ms = it->second.created_ms;
  i.builtin = i.config.labels.count("pitbox.builtin") > 0;
  return i;
}

ImageInfo ImageStore::inspect(const std::string& ref) { return info(resolve(ref)); }

std::vector<ImageInfo> ImageStore::list() {
  std::vector<std::pair<int64_t, std::string>> ids;
  {
    std::lock_guard lock(mu_);
    need_index();
    for (const auto& [id, e] : images_) ids.push_back({e.created_ms, id});
  }
  std::sort(ids.begin(), ids.end(), std::greater<>());
  std::vector<ImageInfo> out = {info("host")};
  for (const auto& [created, id] : ids) {
    try {
      out.push_back(info(id));
    } catch (const Error&) {
      // Removed meanwhile.
    }
  }
  return out;
}

std::string ImageStore::tag(const std::string& ref, const std::string& new_tag) {
  std::string tag = normalize_tag(new_tag);
  if (tag == "host:latest" || tag == "busybox:latest") {
    throw Error(ErrorCode::invalid_argument, "\"" + new_tag + "\" is the name of a built-in image",
                {{"field", "tag"}});
  }
  std::string id = resolve(ref);
  if (id == "host") throw invalid_argument("the built-in host image cannot be tagged");
  std::lock_guard lock(mu_);
  IndexLock index(*this);
  if (!images_.count(id)) throw not_found("image \"" + ref + "\" not found");
  tags_[tag] = id;
  save_index();
  return tag;
}

ImageStore::Removed ImageStore::remove(const std::string& ref, const InUse& in_use) {
  if (ref == "host") throw invalid_argument("the built-in host image cannot be removed");
  std::string id = resolve(ref);
  std::lock_guard lock(mu_);
  IndexLock index(*this);
  Removed out;
  std::string tag;
  if (ref.rfind("sha256:", 0) != 0) {
    tag = with_tag(ref);
    if (auto it = tags_.find(tag); it == tags_.end() || it->second != id) tag.clear();
  }
  size_t tag_count = 0;
  for (const auto& [t, tid] : tags_) tag_count += tid == id;
  if (!tag.empty() && tag_count > 1) {
    tags_.erase(tag);
    save_index();
    out.untagged.push_back(tag);
    return out;
  }
  if (std::string user = in_use(id); !user.empty()) {
    throw Error(ErrorCode::conflict,
                "image \"" + ref + "\" is in use by " + user + "; remove that first",
                {{"image", id}});
  }
  for (auto it = tags_.begin(); it != tags_.end();) {
    if (it->second == id) {
      out.untagged.push_back(it->first);
      it = tags_.erase(it);
    } else {
      ++it;
    }
  }
  images_.erase(id);
  loaded_.erase(id);
  save_index();
  out.deleted.push_back(id);
  collect_garbage();
  return out;
}

ImageStore::Pruned ImageStore::prune(const InUse& in_use) {
  std::lock_guard lock(mu_);
  IndexLock index(*this);
  Pruned out;
  std::set<std::string> tagged;
  for (const auto& [t, id] : tags_) tagged.insert(id);
  for (auto it = images_.begin(); it != images_.end();) {
    if (!tagged.count(it->first) && in_use(it->first).empty()) {
      out.images.push_back(it->first);
      loaded_.erase(it->first);
      it = images_.erase(it);
    } else {
      ++it;
    }
  }
  save_index();
  std::tie(out.layers, out.bytes) = collect_garbage();
  return out;
}

std::pair<size_t, uint64_t> ImageStore::collect_garbage() {
  std::set<std::string> blobs, layers;
  for (const auto& [id, e] : images_) {
    std::string hex = digest_hex(id);
    blobs.insert(hex);
    try {
      json manifest = json::parse(sys::read_file(blob_path(id)));
      blobs.insert(digest_hex(manifest["config"]["digest"]));
      json config = json::parse(sys::read_file(blob_path(manifest["config"]["digest"])));
      for (const auto& l : manifest["layers"]) blobs.insert(digest_hex(l["digest"]));
      for (const auto& d : string_array(config["rootfs"]["diff_ids"])) layers.insert(digest_hex(d));
    } catch (const std::exception&) {
      // A broken image keeps what it has; it is removed by hand.
    }
  }
  for (const auto& p : pinned_layers_) {
    blobs.insert(digest_hex(p));
    layers.insert(digest_hex(p));
  }
  size_t removed = 0;
  uint64_t bytes = 0;
  for (const auto& e : sys::read_dir(dir_ + "/blobs/sha256")) {
    if (blobs.count(e.name)) continue;
    std::string path = dir_ + "/blobs/sha256/" + e.name;
    struct stat st;
    if (::stat(path.c_str(), &st) == 0) bytes += static_cast<uint64_t>(st.st_size);
    ::unlink(path.c_str());
  }
  for (const auto& e : sys::read_dir(dir_ + "/layers/sha256")) {
    if (layers.count(e.name)) continue;
    // Renamed away first: a half-removed layer is never mistaken for a whole one.
    std::string path = dir_ + "/layers/sha256/" + e.name;
    std::string doomed = dir_ + "/tmp/gone-" + e.name;
    if (::rename(path.c_str(), doomed.c_str()) == 0) {
      sys::remove_tree(doomed);
      ++removed;
    }
  }
  return {removed, bytes};
}

// ---------------------------------------------------------------------------------------------
// Adding images

std::string ImageStore::put_blob(std::string_view data) {
  std::string digest = "sha256:" + sys::sha256_hex(data);
  std::string path = blob_path(digest);
  if (!sys::exists(path)) {
    ensure_dirs();
    sys::write_file_atomic(path, data, 0600);
  }
  return digest;
}

namespace {

// Moves what was made in a temporary directory to its content address, unless someone made it
// first.
void install(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) == 0) return;
  if (errno != EEXIST && errno != ENOTEMPTY) throw_errno("rename " + from + " to " + to);
}

}  // namespace

LayerDesc ImageStore::add_layer(int fd, const std::string& expect_digest,
                                const std::string& expect_diff_id) {
  std::string tmp = make_tmp_dir("layer");
  try {
    std::string blob = tmp + "/blob", tree = tmp + "/tree";
    if (::mkdir(tree.c_str(), 0755) != 0) throw_errno("mkdir " + tree);
    sys::UniqueFd out(::open(blob.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!out) throw_errno("create " + blob);
    LayerDigests d = unpack_layer(fd, tree, out.get());
    if (::fsync(out.get()) != 0) throw_errno("fsync " + blob);
    if (!expect_digest.empty() && expect_digest != d.blob_digest) {
      throw Error(ErrorCode::invalid_argument,
                  "layer " + expect_digest + " does not match its content (" + d.blob_digest + ")",
                  {{"digest", expect_digest}});
    }
    if (!expect_diff_id.empty() && expect_diff_id != d.diff_id) {
      throw Error(ErrorCode::invalid_argument,
                  "layer " + d.blob_digest + " unpacks to " + d.diff_id +
                      " but the image config says " + expect_diff_id,
                  {{"diff_id", expect_diff_id}});
    }
    LayerDesc l{layer_media_type(d.compression), d.blob_digest, d.diff_id, d.blob_size};
    {
      std::lock_guard lock(mu_);
      pinned_layers_.insert(l.diff_id);
      pinned_layers_.insert(l.digest);
      install(blob, blob_path(l.digest));
      install(tree, layer_path(l.diff_id));
    }
    sys::remove_tree(tmp);
    return l;
  } catch (...) {
    sys::remove_tree(tmp);
    throw;
  }
}

LayerDesc ImageStore::add_layer_from_dir(const std::string& dir) {
  std::string tmp = make_tmp_dir("pack");
  try {
    std::string blob = tmp + "/blob";
    {
      sys::UniqueFd out(::open(blob.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
      if (!out) throw_errno("create " + blob);
      pack_layer(dir, out.get(), Compression::zstd);
    }
    sys::UniqueFd in(::open(blob.c_str(), O_RDONLY | O_CLOEXEC));
    if (!in) throw_errno("open " + blob);
    LayerDesc l = add_layer(in.get());
    sys::remove_tree(tmp);
    return l;
  } catch (...) {
    sys::remove_tree(tmp);
    throw;
  }
}

std::string ImageStore::register_manifest(const std::string& manifest,
                                          const std::vector<std::string>& tags) {
  std::vector<std::string> normalized;
  for (const auto& t : tags) normalized.push_back(normalize_tag(t));
  json m = json::parse(manifest);
  std::string config_digest = m["config"]["digest"];
  if (!sys::exists(blob_path(config_digest))) {
    throw internal_error("config " + config_digest + " is not in the store");
  }
  json config = json::parse(sys::read_file(blob_path(config_digest)));
  for (const auto& d : string_array(config["rootfs"]["diff_ids"])) {
    if (!sys::is_dir(layer_path(d))) throw internal_error("layer " + d + " is not in the store");
  }
  std::string id = put_blob(manifest);
  std::lock_guard lock(mu_);
  IndexLock index(*this);
  if (!images_.count(id)) {
    int64_t created = parse_created(config);
    images_[id] = {id, created ? created : sys::now_ms()};
  }
  for (const auto& t : normalized) tags_[t] = id;
  for (const auto& l : m["layers"]) pinned_layers_.erase(l.value("digest", ""));
  for (const auto& d : string_array(config["rootfs"]["diff_ids"])) pinned_layers_.erase(d);
  save_index();
  return id;
}

std::string oci_manifest(const std::string& config, const std::vector<LayerDesc>& layers) {
  json descs = json::array();
  for (const auto& l : layers) {
    descs.push_back({{"mediaType", l.media_type}, {"digest", l.digest}, {"size", l.size}});
  }
  json manifest = {{"schemaVersion", 2},
                   {"mediaType", kOciManifestType},
                   {"config",
                    {{"mediaType", kConfigType},
                     {"digest", "sha256:" + sys::sha256_hex(config)},
                     {"size", config.size()}}},
                   {"layers", descs}};
  return manifest.dump();
}

std::string ImageStore::put(ImageDoc d, const std::vector<std::string>& tags) {
  json diff_ids = json::array();
  for (const auto& l : d.layers) diff_ids.push_back(l.diff_id);
  if (!d.config.is_object()) d.config = json::object();
  d.config["rootfs"] = {{"type", "layers"}, {"diff_ids", diff_ids}};
  if (!d.config.contains("architecture")) d.config["architecture"] = "amd64";
  if (!d.config.contains("os")) d.config["os"] = "linux";
  if (!d.config.contains("created")) d.config["created"] = sys::format_time(sys::now_ms());
  std::string config = d.config.dump();
  put_blob(config);
  return register_manifest(oci_manifest(config, d.layers), tags);
}

// ---------------------------------------------------------------------------------------------
// Built-in images

std::string ImageStore::ensure_builtin_layer(const std::string& name, const std::string& fp,
                                             void (*fill)(const std::string& dir)) {
  std::string builtin_dir = dir_ + "/builtin";
  std::string final_dir = builtin_dir + "/" + name + "-" + fp;
  if (sys::is_dir(final_dir)) return final_dir;
  sys::make_dirs(builtin_dir, 0700);
  std::string tmp = builtin_dir + "/.tmp-" + name + "-" + sys::random_base32(8);
  try {
    if (::mkdir(tmp.c_str(), 0755) != 0) throw_errno("mkdir " + tmp);
    fill(tmp);
    if (::rename(tmp.c_str(), final_dir.c_str()) != 0) {
      // Someone else built it at the same time: theirs is as good as ours.
      if (errno != EEXIST && errno != ENOTEMPTY) throw_errno("rename " + tmp);
      sys::remove_tree(tmp);
    }
  } catch (...) {
    sys::remove_tree(tmp);
    throw;
  }
  return final_dir;
}

Image ImageStore::builtin_host() {
  constexpr auto kRecheck = std::chrono::seconds(2);
  auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(mu_);
    if (host_ && now - host_->second < kRecheck) return host_->first;
  }
  std::vector<std::string> sources;
  for (const auto& e : host_etc_allowlist()) sources.push_back("/etc/" + e);
  for (const auto& d : host_lib_dirs()) sources.push_back("/" + d);
  Image img;
  img.id = "host";
  img.name = "host";
  img.layers = {ensure_builtin_layer("host", host_fingerprint(sources), fill_host)};
  img.binds.push_back({"/usr", "/usr", true});
  for (const auto& name : host_lib_dirs()) {
    struct stat st;
    std::string host = "/" + name;
    if (::lstat(host.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
      img.binds.push_back({host, host, true});
  }
  img.config.env = {kDefaultPath};
  img.config.workdir = "";  // the user's home
  std::lock_guard lock(mu_);
  host_ = {img, now};
  return img;
}

std::string ImageStore::ensure_busybox() {
  constexpr auto kRecheck = std::chrono::seconds(2);
  auto now = std::chrono::steady_clock::now();
  std::string current;
  {
    std::lock_guard lock(mu_);
    need_index();
    auto it = tags_.find("busybox:latest");
    if (it != tags_.end()) current = it->second;
    if (!current.empty() && now - busybox_checked_ < kRecheck) return current;
  }
  if (!is_static_elf(kBusyboxBinary)) {
    throw Error(ErrorCode::unavailable,
                "the busybox image needs a static /bin/busybox (Debian package busybox-static)");
  }
  std::string fp = "busybox-" + host_fingerprint({kBusyboxBinary});
  if (!current.empty()) {
    ImageConfig c = load(current).config;
    if (c.labels["pitbox.builtin"] == fp) {
      std::lock_guard lock(mu_);
      busybox_checked_ = now;
      return current;
    }
  }
  std::string tmp = make_tmp_dir("busybox");
  try {
    std::string tree = tmp + "/tree";
    if (::mkdir(tree.c_str(), 0755) != 0) throw_errno("mkdir " + tree);
    fill_busybox(tree);
    LayerDesc l = add_layer_from_dir(tree);
    ImageDoc d;
    d.layers = {l};
    ImageConfig c;
    c.env = {kDefaultPath};
    c.cmd = {"/bin/sh"};
    c.labels["pitbox.builtin"] = fp;
    config_to_oci(c, d.config);
    current = put(d, {"busybox:latest"});
    sys::remove_tree(tmp);
  } catch (...) {
    sys::remove_tree(tmp);
    throw;
  }
  std::lock_guard lock(mu_);
  busybox_checked_ = now;
  return current;
}

}  // namespace pitbox::storage

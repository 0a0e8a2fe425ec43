#include "build/builder.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <sstream>

#include "build/dockerfile.h"
#include "build/ignore.h"
#include "storage/layer.h"
#include "sys/error.h"
#include "sys/fs.h"
#include "sys/mount.h"
#include "sys/text.h"

namespace pitbox::build {

using nlohmann::json;

namespace {

Error at_line(const Instruction& in, const std::string& message) {
  return Error(ErrorCode::invalid_argument,
               "Dockerfile line " + std::to_string(in.line) + ": " + message,
               {{"line", in.line}, {"instruction", in.text}});
}

// ---------------------------------------------------------------------------------------------
// The build context

struct ContextFile {
  std::string path;  // relative to the context root
  struct stat st;
};

class Context {
 public:
  explicit Context(const std::string& dir) : dir_(dir) {
    if (dir.empty()) return;
    root_ = sys::UniqueFd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root_) throw_errno("open the build context " + dir);
    sys::UniqueFd ignore = sys::open_in_root(root_.get(), ".dockerignore", O_RDONLY | O_CLOEXEC);
    if (ignore) rules_ = IgnoreRules::parse(sys::read_fd(ignore.get(), 1 << 20));
    walk("");
  }

  int root() const { return root_.get(); }
  const std::vector<ContextFile>& files() const { return files_; }

  // The files and directories `source` names (a path or a pattern), in path order.
  std::vector<const ContextFile*> match(const Instruction& in, const std::string& source) const {
    std::string clean = clean_path(in, source);
    std::vector<const ContextFile*> out;
    bool pattern = clean.find_first_of("*?[") != std::string::npos;
    for (const auto& f : files_) {
      if (pattern ? path_match(clean, f.path) : f.path == clean) out.push_back(&f);
    }
    if (clean.empty()) out.push_back(&root_entry_);
    if (out.empty()) {
      throw at_line(in, "\"" + source + "\" is not in the build context" +
                            (rules_.empty() ? "" : " (or .dockerignore excludes it)"));
    }
    return out;
  }

  // The files under `dir` ("" = all), for copying a directory.
  std::vector<const ContextFile*> under(const std::string& dir) const {
    std::vector<const ContextFile*> out;
    std::string prefix = dir.empty() ? "" : dir + "/";
    for (const auto& f : files_) {
      if (f.path.compare(0, prefix.size(), prefix) == 0 && f.path.size() > prefix.size())
        out.push_back(&f);
    }
    return out;
  }

  // The hash of what `sources` hold (names, types, modes and contents; not times).
  std::string hash(const std::vector<const ContextFile*>& sources) const {
    sys::Sha256 h;
    auto add = [&](const ContextFile& f) {
      h.update(f.path);
      h.update(std::string(1, '\0'));
      h.update(std::to_string(f.st.st_mode) + "\n");
      if (S_ISREG(f.st.st_mode)) {
        sys::UniqueFd fd(::openat(root_.get(), f.path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
        if (!fd) throw_errno("read " + f.path + " of the build context");
        h.update_from(fd.get(), f.path + " of the build context");
      } else if (S_ISLNK(f.st.st_mode)) {
        char target[4096];
        ssize_t n = ::readlinkat(root_.get(), f.path.c_str(), target, sizeof target);
        if (n > 0) h.update(std::string_view(target, static_cast<size_t>(n)));
      }
    };
    for (const auto* s : sources) {
      if (S_ISDIR(s->st.st_mode)) {
        for (const auto* f : under(s->path)) add(*f);
      } else {
        add(*s);
      }
    }
    return h.hex();
  }

 private:
  // A source path made relative to the context root; refused when it leaves the context.
  static std::string clean_path(const Instruction& in, const std::string& source) {
    std::vector<std::string> parts;
    std::stringstream ss(source);
    std::string part;
    while (std::getline(ss, part, '/')) {
      if (part.empty() || part == ".") continue;
      if (part == "..") {
        if (parts.empty()) throw at_line(in, "\"" + source + "\" is outside the build context");
        parts.pop_back();
        continue;
      }
      parts.push_back(part);
    }
    std::string out;
    for (const auto& p : parts) out += (out.empty() ? "" : "/") + p;
    return out;
  }

  void walk(const std::string& rel) {
    sys::UniqueFd dir(rel.empty() ? ::dup(root_.get())
                                  : ::openat(root_.get(), rel.c_str(),
                                             O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dir) throw_errno("read the build context at " + (rel.empty() ? "/" : rel));
    if (rel.empty()) {
      dir = sys::UniqueFd(::openat(root_.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (::fstat(dir.get(), &root_entry_.st) != 0) throw_errno("stat the build context");
    }
    auto entries = sys::read_dir(dir.get());
    std::sort(entries.begin(), entries.end(),
              [](const auto& a, const auto& b) { return a.name < b.name; });
    for (const auto& e : entries) {
      std::string path = rel.empty() ? e.name : rel + "/" + e.name;
      ContextFile f{path, {}};
      if (::fstatat(dir.get(), e.name.c_str(), &f.st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      if (!rules_.empty() && rules_.ignored(path)) {
        // An ignored directory may still hold what a later "!" rule brings back.
        if (S_ISDIR(f.st.st_mode) && !rules_.can_skip_dir(path)) walk(path);
        continue;
      }
      if (!S_ISREG(f.st.st_mode) && !S_ISDIR(f.st.st_mode) && !S_ISLNK(f.st.st_mode)) continue;
      files_.push_back(f);
      if (S_ISDIR(f.st.st_mode)) walk(path);
    }
  }

  std::string dir_;
  sys::UniqueFd root_;
  IgnoreRules rules_;
  std::vector<ContextFile> files_;
  ContextFile root_entry_{"", {}};
};

// ---------------------------------------------------------------------------------------------
// Writing into an image's root (COPY, ADD)

struct Owner {
  bool set = false;
  uid_t uid = 0;
  gid_t gid = 0;
};

// The id of `name` in the image's /etc/passwd or /etc/group (field 3), or -1.
long lookup_id(int root, const char* file, const std::string& name) {
  sys::UniqueFd fd = sys::open_in_root(root, file, O_RDONLY | O_CLOEXEC);
  if (!fd) return -1;
  std::stringstream ss(sys::read_fd(fd.get(), 4 << 20));
  std::string line;
  while (std::getline(ss, line)) {
    std::vector<std::string> f;
    std::stringstream ls(line);
    std::string field;
    while (std::getline(ls, field, ':')) f.push_back(field);
    if (f.size() >= 3 && f[0] == name) {
      try {
        return std::stol(f[2]);
      } catch (...) {
        return -1;
      }
    }
  }
  return -1;
}

Owner parse_owner(const Instruction& in, int root, const std::string& spec) {
  Owner o;
  o.set = true;
  std::string user = spec, group;
  if (size_t colon = spec.find(':'); colon != std::string::npos) {
    user = spec.substr(0, colon);
    group = spec.substr(colon + 1);
  }
  auto id_of = [&](const std::string& name, const char* file, const char* what) -> uint32_t {
    if (!name.empty() && std::all_of(name.begin(), name.end(), ::isdigit)) {
      return static_cast<uint32_t>(std::stoul(name));
    }
    long id = lookup_id(root, file, name);
    if (id < 0)
      throw at_line(in, std::string("--chown: no ") + what + " \"" + name + "\" in the image");
    return static_cast<uint32_t>(id);
  };
  if (user.empty()) throw at_line(in, "--chown needs a user");
  o.uid = id_of(user, "/etc/passwd", "user");
  o.gid = group.empty() ? o.uid : id_of(group, "/etc/group", "group");
  return o;
}

// The directory `path` of the root, made (0755, root) where missing; symlinks on the way
// resolve inside the root, as they would in a box.
sys::UniqueFd make_dirs_in(int root, const std::string& path) {
  std::string sofar;
  sys::UniqueFd dir(::openat(root, ".", O_PATH | O_DIRECTORY | O_CLOEXEC));
  std::stringstream ss(path);
  std::string part;
  while (std::getline(ss, part, '/')) {
    if (part.empty() || part == ".") continue;
    sofar += "/" + part;
    sys::UniqueFd next = sys::open_in_root(root, sofar, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (!next) {
      if (errno != ENOENT) throw_errno("open " + sofar + " in the image");
      if (::mkdirat(dir.get(), part.c_str(), 0755) != 0 && errno != EEXIST)
        throw_errno("mkdir " + sofar + " in the image");
      next = sys::open_in_root(root, sofar, O_PATH | O_DIRECTORY | O_CLOEXEC);
      if (!next) throw_errno("open " + sofar + " in the image");
    }
    dir = std::move(next);
  }
  return dir;
}

void copy_entry(int src_root, const ContextFile& f, int dst_dir, const std::string& name,
                const Owner& owner, std::optional<mode_t> chmod) {
  uid_t uid = owner.set ? owner.uid : 0;
  gid_t gid = owner.set ? owner.gid : 0;
  // Whatever was there goes (a directory over a directory stays).
  struct stat old;
  if (::fstatat(dst_dir, name.c_str(), &old, AT_SYMLINK_NOFOLLOW) == 0) {
    if (!(S_ISDIR(old.st_mode) && S_ISDIR(f.st.st_mode))) sys::remove_tree_at(dst_dir, name);
  }
  mode_t mode = chmod ? *chmod : (f.st.st_mode & 07777);
  if (S_ISDIR(f.st.st_mode)) {
    if (::mkdirat(dst_dir, name.c_str(), mode) != 0 && errno != EEXIST)
      throw_errno("mkdir " + name);
    sys::UniqueFd d(
        ::openat(dst_dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!d || ::fchown(d.get(), uid, gid) != 0 || ::fchmod(d.get(), mode) != 0)
      throw_errno("set up directory " + name);
  } else if (S_ISLNK(f.st.st_mode)) {
    char target[4096];
    ssize_t n = ::readlinkat(src_root, f.path.c_str(), target, sizeof target - 1);
    if (n < 0) throw_errno("readlink " + f.path);
    target[n] = 0;
    if (::symlinkat(target, dst_dir, name.c_str()) != 0) throw_errno("symlink " + name);
    ::fchownat(dst_dir, name.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW);
  } else {
    sys::UniqueFd in(::openat(src_root, f.path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!in) throw_errno("open " + f.path + " of the build context");
    sys::UniqueFd out(::openat(dst_dir, name.c_str(),
                               O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!out) throw_errno("create " + name);
    char buf[1 << 16];
    for (;;) {
      ssize_t n = ::read(in.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw_errno("read " + f.path);
      if (n == 0) break;
      if (!sys::write_all(out.get(), std::string_view(buf, static_cast<size_t>(n))))
        throw_errno("write " + name);
    }
    if (::fchown(out.get(), uid, gid) != 0 || ::fchmod(out.get(), mode) != 0)
      throw_errno("set up " + name);
    struct timespec times[2] = {f.st.st_atim, f.st.st_mtim};
    ::futimens(out.get(), times);
  }
}

bool is_archive(int root, const ContextFile& f) {
  if (!S_ISREG(f.st.st_mode)) return false;
  sys::UniqueFd fd(::openat(root, f.path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  unsigned char head[512] = {};
  ssize_t n = fd ? ::pread(fd.get(), head, sizeof head, 0) : -1;
  if (n >= 2 && head[0] == 0x1f && head[1] == 0x8b) return true;
  if (n >= 4 && head[0] == 0x28 && head[1] == 0xb5 && head[2] == 0x2f && head[3] == 0xfd)
    return true;
  return n >= 262 && std::string_view(reinterpret_cast<char*>(head) + 257, 5) == "ustar";
}

// COPY or ADD into `root` (an image's merged root, writable).
void copy_into(const Instruction& in, const Context& ctx, int root,
               const std::vector<std::string>& sources, const std::string& dest,
               const std::string& workdir, bool add) {
  std::string target = dest;
  if (target.empty() || target[0] != '/') target = sys::join_path(workdir, target);
  std::vector<const ContextFile*> matched;
  for (const auto& s : sources) {
    auto m = ctx.match(in, s);
    matched.insert(matched.end(), m.begin(), m.end());
  }
  bool to_dir = dest.back() == '/' || sources.size() > 1 || matched.size() > 1 ||
                S_ISDIR(matched[0]->st.st_mode);
  if (sources.size() > 1 && dest.back() != '/') {
    throw at_line(in, "with more than one source the destination must be a directory ending in /");
  }
  Owner owner;
  if (auto it = in.flags.find("chown"); it != in.flags.end())
    owner = parse_owner(in, root, it->second);
  std::optional<mode_t> chmod;
  if (auto it = in.flags.find("chmod"); it != in.flags.end()) {
    char* end = nullptr;
    unsigned long m = std::strtoul(it->second.c_str(), &end, 8);
    if (it->second.empty() || *end || m > 07777) throw at_line(in, "--chmod wants an octal mode");
    chmod = static_cast<mode_t>(m);
  }
  for (const auto* f : matched) {
    if (S_ISDIR(f->st.st_mode)) {
      // A directory's contents, not the directory itself.
      sys::UniqueFd base = make_dirs_in(root, target);
      for (const auto* c : ctx.under(f->path)) {
        std::string rel = f->path.empty() ? c->path : c->path.substr(f->path.size() + 1);
        auto [parent, name] = sys::split_parent(rel);
        sys::UniqueFd dir = parent == "." ? sys::UniqueFd(::dup(base.get()))
                                          : make_dirs_in(root, sys::join_path(target, parent));
        copy_entry(ctx.root(), *c, dir.get(), name, owner, chmod);
      }
    } else if (add && is_archive(ctx.root(), *f)) {
      sys::UniqueFd dir = make_dirs_in(root, target);
      sys::UniqueFd archive(
          ::openat(ctx.root(), f->path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
      if (!archive) throw_errno("open " + f->path);
      try {
        storage::unpack_layer(archive.get(), "/proc/self/fd/" + std::to_string(dir.get()));
      } catch (const Error& e) {
        throw at_line(in, "ADD " + f->path + ": " + e.message());
      }
    } else {
      std::string path =
          to_dir ? sys::join_path(target, sys::split_parent(f->path).second) : target;
      auto [parent, name] = sys::split_parent(path);
      sys::UniqueFd dir = make_dirs_in(root, parent);
      copy_entry(ctx.root(), *f, dir.get(), name, owner, chmod);
    }
  }
}

// A layer of what `write` puts into an overlay of `lower` (layer dirs, topmost first).
storage::LayerDesc layer_of(storage::ImageStore& store, const std::vector<std::string>& lower,
                            const std::function<void(int root)>& write) {
  std::string tmp = store.make_tmp_dir("copy");
  try {
    std::string tree = tmp + "/tree", work = tmp + "/work";
    for (const auto& d : {tree, work})
      if (::mkdir(d.c_str(), 0755) != 0) throw_errno("mkdir " + d);
    {
      sys::UniqueFd upper(::open(tree.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
      sys::UniqueFd workfd(::open(work.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
      if (!upper || !workfd) throw_errno("open " + tmp);
      if (lower.empty()) {
        sys::UniqueFd root(::open(tree.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        write(root.get());
      } else {
        std::vector<sys::UniqueFd> fds;
        sys::OverlayLayers layers;
        for (const auto& l : lower) {
          fds.emplace_back(::open(l.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
          if (!fds.back()) throw_errno("open layer " + l);
          layers.lower.push_back(fds.back().get());
        }
        layers.upper = upper.get();
        layers.work = workfd.get();
        // Detached: never visible in any mount table, gone with its last fd.
        sys::UniqueFd mnt = sys::make_overlay(layers);
        write(mnt.get());
      }
    }
    storage::LayerDesc l = store.add_layer_from_dir(tree);
    sys::remove_tree(tmp);
    return l;
  } catch (...) {
    sys::remove_tree(tmp);
    throw;
  }
}

// ---------------------------------------------------------------------------------------------
// Steps

struct State {
  std::string id;  // the image the next step stands on ("" = scratch)
  storage::ImageDoc doc;
  storage::ImageConfig config;
  std::map<std::string, std::string> args;  // ARGs in scope
};

void set_env(std::vector<std::string>& env, const std::string& key, const std::string& value) {
  for (auto& e : env) {
    if (e.compare(0, key.size() + 1, key + "=") == 0) {
      e = key + "=" + value;
      return;
    }
  }
  env.push_back(key + "=" + value);
}

std::map<std::string, std::string> env_map(const std::vector<std::string>& env) {
  std::map<std::string, std::string> m;
  for (const auto& e : env) {
    size_t eq = e.find('=');
    if (eq != std::string::npos) m[e.substr(0, eq)] = e.substr(eq + 1);
  }
  return m;
}

// The variables an instruction's words expand with: ARGs, then ENV over them.
std::map<std::string, std::string> vars_of(const State& s) {
  auto vars = s.args;
  for (const auto& [k, v] : env_map(s.config.env)) vars[k] = v;
  return vars;
}

std::string cache_path(storage::ImageStore& store, const std::string& key) {
  return store.dir() + "/build-cache/" + key;
}

}  // namespace

asio::awaitable<BuildResult> build_image(storage::ImageStore& store, BuildOptions options,
                                         BuildHost& host) {
  Dockerfile df = parse_dockerfile(options.dockerfile);
  Context ctx(options.context_dir);
  for (const auto& t : options.tags) storage::ImageStore::normalize_tag(t);
  sys::make_dirs(store.dir() + "/build-cache", 0700);
  BuildResult result;
  State s;
  std::map<std::string, std::string> global_args;
  std::set<std::string> used_args;
  bool from_seen = false;
  size_t n = df.instructions.size();
  for (size_t i = 0; i < n; ++i) {
    const Instruction& in = df.instructions[i];
    {
      std::string line =
          "Step " + std::to_string(i + 1) + "/" + std::to_string(n) + " : " + in.text + "\n";
      co_await host.log(line);
    }
    auto vars = vars_of(s);
    auto expand_word = [&](const std::string& w) { return expand(w, vars, in.line, df.escape); };
    if (in.keyword == "ARG") {
      std::vector<bool> has_value;
      auto& scope = from_seen ? vars : global_args;
      auto pairs = parse_key_values(in, &scope, &has_value, df.escape);
      for (size_t p = 0; p < pairs.size(); ++p) {
        const std::string& name = pairs[p].first;
        std::optional<std::string> value;
        if (p < has_value.size() && has_value[p]) value = pairs[p].second;
        if (auto it = options.args.find(name); it != options.args.end()) value = it->second;
        used_args.insert(name);
        if (!from_seen) {
          if (value) global_args[name] = *value;
          continue;
        }
        if (!value) {
          if (auto g = global_args.find(name); g != global_args.end()) value = g->second;
        }
        s.args[name] = value.value_or("");
        vars[name] = s.args[name];
      }
      continue;
    }
    if (in.keyword == "FROM") {
      from_seen = true;
      std::string ref = expand(in.args.at(0), global_args, in.line, df.escape);
      s = State{};
      if (ref != "scratch") {
        if (ref == "host") {
          throw at_line(in,
                        "FROM host: the host image binds the host's /usr and cannot be "
                        "built on (use base, busybox or an imported image)");
        }
        try {
          s.id = store.resolve(ref);
          s.doc = store.doc(s.id);
        } catch (const Error& e) {
          throw at_line(in, "FROM " + ref + ": " + e.message());
        }
        s.config = storage::config_from_oci(s.doc.config);
        s.config.labels.erase("pitbox.builtin");  // what is built on busybox is not busybox
      } else {
        s.doc.config = json::object();
      }
      host.standing_on(s.id);
      {
        std::string line = " ---> " + (s.id.empty() ? std::string("scratch") : s.id) + "\n";
        co_await host.log(line);
      }
      continue;
    }
    // Every other step makes an image: looked up in the cache first.
    ++result.steps;
    std::vector<std::string> words;
    bool expands = in.keyword != "RUN" && in.keyword != "CMD" && in.keyword != "ENTRYPOINT" &&
                   in.keyword != "SHELL" && in.keyword != "ENV" && in.keyword != "LABEL";
    for (const auto& a : in.args) words.push_back(expands ? expand_word(a) : a);
    json step = {{"op", in.keyword}, {"args", words}, {"json", in.json_form}, {"flags", in.flags}};
    std::vector<const ContextFile*> sources;
    if (in.keyword == "COPY" || in.keyword == "ADD") {
      for (size_t w = 0; w + 1 < words.size(); ++w) {
        auto m = ctx.match(in, words[w]);
        sources.insert(sources.end(), m.begin(), m.end());
      }
      step["inputs"] = ctx.hash(sources);
    }
    // The ARGs in scope: a step whose words or environment use one differs when it does.
    step["build_args"] = s.args;
    step["workdir"] = s.config.workdir;
    std::string key = sys::sha256_hex(s.id + "\n" + step.dump());
    if (!options.no_cache && sys::exists(cache_path(store, key))) {
      std::string cached = sys::read_file(cache_path(store, key));
      if (store.exists(cached)) {
        s.id = cached;
        s.doc = store.doc(cached);
        s.config = storage::config_from_oci(s.doc.config);
        host.standing_on(s.id);
        ++result.cached;
        {
          std::string line = " ---> Using cache " + s.id + "\n";
          co_await host.log(line);
        }
        continue;
      }
    }
    std::optional<storage::LayerDesc> layer;
    storage::ImageConfig& c = s.config;
    auto shell = c.shell.empty() ? std::vector<std::string>{"/bin/sh", "-c"} : c.shell;
    auto command = [&]() {
      if (in.json_form) return words;
      auto argv = shell;
      argv.push_back(words.at(0));
      return argv;
    };
    if (in.keyword == "ENV" || in.keyword == "LABEL") {
      // One after another: a later pair of the same ENV sees the earlier ones.
      for (auto [k, v] : parse_key_values(in, &vars, nullptr, df.escape)) {
        if (in.keyword == "ENV") {
          set_env(c.env, k, v);
          vars[k] = v;
        } else {
          c.labels[k] = v;
        }
      }
    } else if (in.keyword == "WORKDIR") {
      std::string w = words.at(0);
      c.workdir = w[0] == '/' ? w : sys::join_path(c.workdir.empty() ? "/" : c.workdir, w);
    } else if (in.keyword == "USER") {
      c.user = words.at(0);
    } else if (in.keyword == "EXPOSE") {
      for (auto p : words) {
        if (p.find('/') == std::string::npos) p += "/tcp";
        if (std::find(c.exposed_ports.begin(), c.exposed_ports.end(), p) == c.exposed_ports.end())
          c.exposed_ports.push_back(p);
      }
    } else if (in.keyword == "CMD") {
      c.cmd = command();
    } else if (in.keyword == "ENTRYPOINT") {
      c.entrypoint = command();
    } else if (in.keyword == "SHELL") {
      if (!in.json_form)
        throw at_line(in, "SHELL needs the JSON form, e.g. [\"/bin/bash\", \"-c\"]");
      c.shell = words;
    } else if (in.keyword == "RUN") {
      if (s.id.empty())
        throw at_line(in, "RUN on an empty image (FROM scratch) has nothing to run");
      RunStep run;
      run.argv = command();
      run.env = c.env;
      if (run.env.empty()) run.env = {storage::kDefaultPath};
      for (const auto& [k, v] : s.args) {
        if (!env_map(c.env).count(k)) run.env.push_back(k + "=" + v);
      }
      run.workdir = c.workdir.empty() ? "/" : c.workdir;
      run.user = c.user;
      std::pair<int, storage::LayerDesc> ran = co_await host.run(s.id, run);
      int code = ran.first;
      const storage::LayerDesc& made = ran.second;
      if (code != 0) {
        throw at_line(in, "the command exited with " + std::to_string(code) + ": " + in.text);
      }
      layer = made;
    } else if (in.keyword == "COPY" || in.keyword == "ADD") {
      std::vector<std::string> lower;
      if (!s.id.empty()) lower = store.get(s.id).layers;
      std::vector<std::string> srcs(words.begin(), words.end() - 1);
      std::string dest = words.back();
      std::string workdir = c.workdir.empty() ? "/" : c.workdir;
      bool add = in.keyword == "ADD";
      storage::LayerDesc made;
      std::exception_ptr failed;
      auto task = [&] {
        try {
          made = layer_of(store, lower,
                          [&](int root) { copy_into(in, ctx, root, srcs, dest, workdir, add); });
        } catch (...) {
          failed = std::current_exception();
        }
      };
      std::function<void()> work = task;
      co_await host.offload(work);
      if (failed) std::rethrow_exception(failed);
      layer = made;
    } else {
      throw at_line(in, "unsupported instruction " + in.keyword);
    }
    // The new image: the same layers (and one more), the config as changed.
    if (layer) s.doc.layers.push_back(*layer);
    storage::config_to_oci(c, s.doc.config);
    s.doc.config["created"] = sys::format_time(sys::now_ms());
    json history = s.doc.config.value("history", json::array());
    json entry = {{"created", s.doc.config["created"]}, {"created_by", in.text}};
    if (!layer) entry["empty_layer"] = true;
    history.push_back(entry);
    s.doc.config["history"] = history;
    std::string id;
    storage::ImageDoc doc = s.doc;
    std::function<void()> put = [&] { id = store.put(doc, {}); };
    co_await host.offload(put);
    sys::write_file_atomic(cache_path(store, key), id, 0600);
    s.id = id;
    host.standing_on(s.id);
    {
      std::string line = " ---> " + s.id + "\n";
      co_await host.log(line);
    }
  }
  if (!from_seen) throw invalid_argument("the Dockerfile has no FROM");
  if (s.id.empty())
    throw invalid_argument("the build made an empty image (FROM scratch and nothing else)");
  for (const auto& [name, value] : options.args) {
    if (!used_args.count(name)) {
      {
        std::string line = "warning: build argument " + name + " is not used by the Dockerfile\n";
        co_await host.log(line);
      }
    }
  }
  for (const auto& t : options.tags) store.tag(s.id, t);
  result.image_id = s.id;
  co_return result;
}

}  // namespace pitbox::build

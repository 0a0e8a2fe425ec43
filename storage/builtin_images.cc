// The built-in images' trees: "busybox" (Debian's static busybox and a minimal /etc) and
// "host" (the host's /usr bound read-only, with a fresh /etc that copies only an allowlist).
#include <elf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "storage/images.h"
#include "sys/error.h"
#include "sys/fs.h"

namespace pitbox::storage {

const char* const kBusyboxBinary = "/bin/busybox";
const char* const kDefaultPath =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

namespace {

// Bump when what a built-in image contains changes, so existing machines rebuild it.
constexpr int kBuilderVersion = 1;

constexpr const char* kPasswd =
    "root:x:0:0:root:/root:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
constexpr const char* kGroup =
    "root:x:0:\n"
    "tty:x:5:\n"
    "users:x:100:\n"
    "nogroup:x:65534:\n";
constexpr const char* kHosts =
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n";

void mkdir_mode(const std::string& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) throw_errno("mkdir " + path);
  if (::chmod(path.c_str(), mode) != 0) throw_errno("chmod " + path);
}

void write_mode(const std::string& path, const std::string& data, mode_t mode) {
  sys::write_file(path, data, mode);
  if (::chmod(path.c_str(), mode) != 0) throw_errno("chmod " + path);
}

void make_root_skeleton(const std::string& dir) {
  for (const char* d : {"etc", "home", "var", "run", "proc", "sys", "dev", "mnt", "opt", "srv"}) {
    mkdir_mode(dir + "/" + d, 0755);
  }
  mkdir_mode(dir + "/root", 0700);
  mkdir_mode(dir + "/tmp", 01777);
  mkdir_mode(dir + "/var/tmp", 01777);
  write_mode(dir + "/etc/passwd", kPasswd, 0644);
  write_mode(dir + "/etc/group", kGroup, 0644);
  write_mode(dir + "/etc/hosts", kHosts, 0644);
  write_mode(dir + "/etc/resolv.conf", "", 0644);
  write_mode(dir + "/etc/nsswitch.conf",
             "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n", 0644);
}

// Runs a program and returns its stdout (only at image build time, never on the hot path).
std::string capture(const std::vector<std::string>& argv) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe2");
  sys::UniqueFd r(fds[0]), w(fds[1]);
  pid_t pid = ::fork();
  if (pid < 0) throw_errno("fork");
  if (pid == 0) {
    ::dup2(w.get(), 1);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  w.reset();
  std::string out = sys::read_fd(r.get());
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw internal_error("running " + argv[0] + " failed");
  }
  return out;
}

}  // namespace

void fill_busybox(const std::string& dir) {
  make_root_skeleton(dir);
  for (const char* d : {"bin", "sbin", "usr", "usr/bin", "usr/sbin"})
    mkdir_mode(dir + "/" + d, 0755);
  write_mode(dir + "/bin/busybox", sys::read_file(kBusyboxBinary), 0755);
  std::istringstream applets(capture({kBusyboxBinary, "--list-full"}));
  std::string applet;
  while (std::getline(applets, applet)) {
    if (applet.empty() || applet == "bin/busybox" || applet.find("..") != std::string::npos)
      continue;
    std::string link = dir + "/" + applet;
    if (::symlink("/bin/busybox", link.c_str()) != 0 && errno != EEXIST) {
      throw_errno("symlink " + link);
    }
  }
  write_mode(dir + "/etc/profile", "export PS1='\\u@\\h:\\w\\$ '\n", 0644);
}

// What of the host's /etc the host image copies: nothing secret (no shadow, no keys, no
// credentials), only what programs from /usr need to work.
const std::vector<std::string>& host_etc_allowlist() {
  static const std::vector<std::string> list = {
      "ld.so.cache",
      "ld.so.conf",
      "ld.so.conf.d",
      "alternatives",
      "ssl/certs",
      "ssl/openssl.cnf",
      "ca-certificates.conf",
      "localtime",
      "timezone",
      "bash.bashrc",
      "profile",
      "profile.d",
      "inputrc",
      "mime.types",
      "protocols",
      "services",
      "shells",
      "debian_version",
      "os-release",
      "magic",
      "magic.mime",
      "python3",
      "python3.11",
      "vim",
      "nanorc",
  };
  return list;
}

// The host's top-level directories that programs reach /usr through (merged /usr makes them
// symlinks; on older layouts they are directories and get bound).
const std::vector<std::string>& host_lib_dirs() {
  static const std::vector<std::string> list = {"bin", "sbin", "lib", "lib32", "lib64", "libx32"};
  return list;
}

namespace {

// Copies regular files, directories and symlinks of the host at `src` to `dst`.
void copy_host_tree(const std::string& src, const std::string& dst) {
  struct stat st;
  if (::lstat(src.c_str(), &st) != 0) return;
  if (S_ISLNK(st.st_mode)) {
    char target[4096];
    ssize_t n = ::readlink(src.c_str(), target, sizeof target - 1);
    if (n <= 0) return;
    target[n] = 0;
    if (::symlink(target, dst.c_str()) != 0 && errno != EEXIST) throw_errno("symlink " + dst);
  } else if (S_ISREG(st.st_mode)) {
    write_mode(dst, sys::read_file(src), st.st_mode & 0755);
  } else if (S_ISDIR(st.st_mode)) {
    mkdir_mode(dst, st.st_mode & 0755);
    for (const auto& e : sys::read_dir(src)) copy_host_tree(src + "/" + e.name, dst + "/" + e.name);
  }
}

}  // namespace

void fill_host(const std::string& dir) {
  make_root_skeleton(dir);
  mkdir_mode(dir + "/usr", 0755);
  for (const auto& name : host_lib_dirs()) {
    std::string host = "/" + name;
    struct stat st;
    if (::lstat(host.c_str(), &st) != 0) continue;
    if (S_ISLNK(st.st_mode)) {
      copy_host_tree(host, dir + "/" + name);
    } else if (S_ISDIR(st.st_mode)) {
      mkdir_mode(dir + "/" + name, 0755);
    }
  }
  mkdir_mode(dir + "/etc/ssl", 0755);
  for (const auto& entry : host_etc_allowlist())
    copy_host_tree("/etc/" + entry, dir + "/etc/" + entry);
  write_mode(dir + "/etc/hostname", "pitbox\n", 0644);
}

std::string host_fingerprint(const std::vector<std::string>& paths) {
  uint64_t h = 1469598103934665603ull ^ static_cast<uint64_t>(kBuilderVersion);
  auto mix = [&](uint64_t v) {
    h ^= v;
    h *= 1099511628211ull;
  };
  for (const auto& p : paths) {
    struct stat st;
    if (::lstat(p.c_str(), &st) != 0) {
      mix(0);
      continue;
    }
    mix(static_cast<uint64_t>(st.st_ino));
    mix(static_cast<uint64_t>(st.st_size));
    mix(static_cast<uint64_t>(st.st_mtim.tv_sec));
    mix(static_cast<uint64_t>(st.st_mtim.tv_nsec));
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

bool is_static_elf(const std::string& path) {
  sys::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return false;
  Elf64_Ehdr eh;
  if (::pread(fd.get(), &eh, sizeof eh, 0) != static_cast<ssize_t>(sizeof eh) ||
      std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64) {
    return false;
  }
  for (int i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph;
    off_t off = static_cast<off_t>(eh.e_phoff + static_cast<uint64_t>(i) * eh.e_phentsize);
    if (::pread(fd.get(), &ph, sizeof ph, off) != static_cast<ssize_t>(sizeof ph)) return false;
    if (ph.p_type == PT_INTERP) return false;
  }
  return true;
}

}  // namespace pitbox::storage

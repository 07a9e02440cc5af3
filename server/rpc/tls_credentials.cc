#include "server/rpc/tls_credentials.h"

#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "server/base/log.h"

namespace virtgate {
namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};

absl::Status Bad(const char* flag, const std::string& path, absl::string_view why) {
  ERR_clear_error();
  return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": ", why));
}

absl::StatusOr<std::string> Read(const char* flag, const std::string& path) {
  std::ifstream in(path);
  if (!in) return Bad(flag, path, "cannot be read");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::unique_ptr<BIO, BioFree> Bio(const std::string& pem) {
  return std::unique_ptr<BIO, BioFree>(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

std::unique_ptr<X509, X509Free> FirstCertificate(const std::string& pem) {
  return std::unique_ptr<X509, X509Free>(
      PEM_read_bio_X509(Bio(pem).get(), nullptr, nullptr, nullptr));
}

absl::Status CheckPem(const TlsFiles& files, const TlsPem& pem) {
  std::unique_ptr<X509, X509Free> cert = FirstCertificate(pem.cert);
  if (!cert) return Bad("--tls_cert", files.cert, "no PEM certificate in it");
  std::unique_ptr<EVP_PKEY, KeyFree> key(
      PEM_read_bio_PrivateKey(Bio(pem.key).get(), nullptr, nullptr, nullptr));
  if (!key) return Bad("--tls_key", files.key, "no PEM private key in it (or it is encrypted)");
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    return Bad("--tls_key", files.key,
               absl::StrCat("does not match the certificate in ", files.cert));
  }
  if (!files.client_ca.empty() && !FirstCertificate(pem.client_ca)) {
    return Bad("--tls_client_ca", files.client_ca, "no PEM certificate in it");
  }
  return absl::OkStatus();
}

absl::Status WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::trunc);
  out << content;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TlsPem> ReadCheckedTlsFiles(const TlsFiles& files) {
  if (files.cert.empty() || files.key.empty()) {
    return absl::InvalidArgumentError("TLS needs both --tls_cert and --tls_key");
  }
  if (files.refresh_interval < absl::Seconds(1)) {
    return absl::InvalidArgumentError("--tls_refresh_interval must be at least 1s");
  }
  TlsPem pem;
  absl::StatusOr<std::string> cert = Read("--tls_cert", files.cert);
  if (!cert.ok()) return cert.status();
  pem.cert = *std::move(cert);
  absl::StatusOr<std::string> key = Read("--tls_key", files.key);
  if (!key.ok()) return key.status();
  pem.key = *std::move(key);
  if (!files.client_ca.empty()) {
    absl::StatusOr<std::string> ca = Read("--tls_client_ca", files.client_ca);
    if (!ca.ok()) return ca.status();
    pem.client_ca = *std::move(ca);
  }
  if (absl::Status s = CheckPem(files, pem); !s.ok()) return s;
  return pem;
}

absl::StatusOr<std::unique_ptr<StagedTlsFiles>> StagedTlsFiles::Start(TlsFiles files) {
  absl::StatusOr<TlsPem> pem = ReadCheckedTlsFiles(files);
  if (!pem.ok()) return pem.status();
  const char* tmp = getenv("TMPDIR");
  std::string dir = absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp",
                                 "/virtgated-tls.XXXXXX");
  if (mkdtemp(dir.data()) == nullptr) {  // mode 0700
    return absl::UnavailableError(absl::StrCat(
        "cannot create a private directory for the checked TLS files under ",
        dir.substr(0, dir.rfind('/')), " (set TMPDIR to a writable directory)"));
  }
  std::unique_ptr<StagedTlsFiles> staged(new StagedTlsFiles(std::move(files), dir));
  if (absl::Status s = staged->Stage(*pem); !s.ok()) return s;
  staged->watcher_ = std::thread([s = staged.get()] { s->Watch(); });
  return staged;
}

absl::Status StagedTlsFiles::Stage(const TlsPem& pem) {
  const std::string gen = absl::StrCat("gen-", ++generation_);
  const std::string gen_dir = absl::StrCat(dir_, "/", gen);
  const mode_t old_umask = umask(077);
  std::error_code error;
  std::filesystem::create_directory(gen_dir, error);
  absl::Status s = error ? absl::InternalError(absl::StrCat("cannot create ", gen_dir))
                         : WriteFile(gen_dir + "/key.pem", pem.key);
  if (s.ok()) s = WriteFile(gen_dir + "/cert.pem", pem.cert);
  if (s.ok()) s = WriteFile(gen_dir + "/ca.pem", pem.client_ca);
  umask(old_umask);
  if (!s.ok()) return s;
  // One rename switches every file at once; gRPC re-reads when it sees the
  // files change under it.
  const std::string link = dir_ + "/current.new";
  unlink(link.c_str());
  if (symlink(gen.c_str(), link.c_str()) != 0 ||
      rename(link.c_str(), (dir_ + "/current").c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot switch ", dir_, "/current to ", gen));
  }
  // The generation before the last may still be open in gRPC: drop the one
  // before that.
  std::filesystem::remove_all(absl::StrCat(dir_, "/gen-", generation_ - 2), error);
  staged_ = pem;
  return absl::OkStatus();
}

void StagedTlsFiles::Watch() {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), files_.refresh_interval)) return;
    }
    TlsPem seen;
    seen.cert = Read("--tls_cert", files_.cert).value_or("");
    seen.key = Read("--tls_key", files_.key).value_or("");
    if (!files_.client_ca.empty()) seen.client_ca = Read("--tls_client_ca", files_.client_ca).value_or("");
    if (seen.cert == staged_.cert && seen.key == staged_.key && seen.client_ca == staged_.client_ca) {
      continue;
    }
    absl::StatusOr<TlsPem> pem = ReadCheckedTlsFiles(files_);
    if (!pem.ok()) {
      const std::string bad = absl::StrCat(seen.cert, seen.key, seen.client_ca);
      if (bad != last_bad_) {
        LogError("TLS files changed but ", pem.status().message(),
                 "; still serving the last good certificate");
        last_bad_ = bad;
      }
      continue;
    }
    if (absl::Status s = Stage(*pem); !s.ok()) {
      LogError(s.message(), "; still serving the last good certificate");
      continue;
    }
    last_bad_.clear();
    LogInfo("TLS files changed: new connections get the new certificate",
            files_.client_ca.empty() ? "" : " and client CA");
  }
}

std::shared_ptr<grpc::ServerCredentials> StagedTlsFiles::Credentials() const {
  const std::string current = dir_ + "/current/";
  const auto seconds = static_cast<unsigned>(absl::ToInt64Seconds(files_.refresh_interval));
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      current + "key.pem", current + "cert.pem",
      files_.client_ca.empty() ? "" : current + "ca.pem", seconds);
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (files_.client_ca.empty()) {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  } else {
    options.watch_root_certs();
    options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

StagedTlsFiles::~StagedTlsFiles() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (watcher_.joinable()) watcher_.join();
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

}  // namespace virtgate

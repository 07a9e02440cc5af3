#include "tests/support/test_domains.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/libvirt/handles.h"  // header-only RAII owners
#include "tests/support/libvirt_direct.h"

namespace virtgate::testing {

std::string TestDomainXml(const std::string& name, const std::string& uuid) {
  return absl::StrCat("<domain type='test'><name>", name, "</name>",
                      uuid.empty() ? "" : absl::StrCat("<uuid>", uuid, "</uuid>"),
                      "<memory unit='KiB'>131072</memory>"
                      "<currentMemory unit='KiB'>65536</currentMemory><vcpu>1</vcpu>"
                      "<os><type>hvm</type></os></domain>");
}

absl::Status DefineDomains(virConnectPtr conn, const std::string& prefix, int count,
                           int start_every) {
  for (int i = 0; i < count; ++i) {
    const std::string name = absl::StrFormat("%s%05d", prefix, i);
    DomainHandle dom(virDomainDefineXML(conn, TestDomainXml(name).c_str()));
    if (!dom) return LastError("define " + name);
    if (start_every > 0 && i % start_every == 0 && virDomainCreate(dom.get()) < 0) {
      return LastError("start " + name);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::map<std::string, TruthEntry>> GroundTruth(virConnectPtr conn,
                                                              unsigned int flags) {
  absl::StatusOr<std::map<std::string, Truth>> all = GroundTruth(conn, "", flags);
  if (!all.ok()) return all.status();
  std::map<std::string, TruthEntry> out;
  for (const auto& [uuid, t] : *all) out[uuid] = {t.name, t.state};
  return out;
}

}  // namespace virtgate::testing

#include "server/libvirt/errors.h"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "absl/strings/str_cat.h"
#include "server/base/log.h"

namespace virtgate {

absl::StatusCode MapLibvirtErrorCode(int error_number, int error_domain) {
  switch (error_number) {
    case VIR_ERR_OK:
      return absl::StatusCode::kOk;
    case VIR_ERR_NO_DOMAIN:
    case VIR_ERR_NO_NETWORK:
    case VIR_ERR_NO_STORAGE_POOL:
    case VIR_ERR_NO_STORAGE_VOL:
    case VIR_ERR_NO_NODE_DEVICE:
    case VIR_ERR_NO_INTERFACE:
    case VIR_ERR_NO_SECRET:
    case VIR_ERR_NO_NWFILTER:
    case VIR_ERR_NO_DOMAIN_SNAPSHOT:
    case VIR_ERR_NO_DOMAIN_CHECKPOINT:
    case VIR_ERR_NO_DOMAIN_METADATA:
    case VIR_ERR_NO_DOMAIN_BACKUP:
      return absl::StatusCode::kNotFound;
    case VIR_ERR_INVALID_ARG:
    case VIR_ERR_XML_ERROR:
    case VIR_ERR_XML_DETAIL:
    case VIR_ERR_CONFIG_UNSUPPORTED:
      return absl::StatusCode::kInvalidArgument;
    case VIR_ERR_OPERATION_INVALID:
    case VIR_ERR_DOM_EXIST:
      return absl::StatusCode::kFailedPrecondition;
    case VIR_ERR_OPERATION_DENIED:
    case VIR_ERR_ACCESS_DENIED:
      return absl::StatusCode::kPermissionDenied;
    case VIR_ERR_AUTH_FAILED:
    case VIR_ERR_AUTH_CANCELLED:
    case VIR_ERR_AUTH_UNAVAILABLE:
      return absl::StatusCode::kUnauthenticated;
    case VIR_ERR_NO_CONNECT:
    case VIR_ERR_INVALID_CONN:
    case VIR_ERR_RPC:
    case VIR_ERR_OPERATION_TIMEOUT:
    case VIR_ERR_AGENT_UNRESPONSIVE:
    case VIR_ERR_AGENT_UNSYNCED:
      return absl::StatusCode::kUnavailable;
    case VIR_ERR_SYSTEM_ERROR:
      // A system error from the RPC layer is a broken socket; elsewhere it is
      // a host-side failure libvirt could not complete.
      return error_domain == VIR_FROM_RPC || error_domain == VIR_FROM_REMOTE
                 ? absl::StatusCode::kUnavailable
                 : absl::StatusCode::kInternal;
    case VIR_ERR_NO_SUPPORT:
    case VIR_ERR_OPERATION_UNSUPPORTED:
      return absl::StatusCode::kUnimplemented;
    case VIR_ERR_OPERATION_ABORTED:
      return absl::StatusCode::kAborted;
    case VIR_ERR_RESOURCE_BUSY:
      return absl::StatusCode::kUnavailable;
    case VIR_ERR_INTERNAL_ERROR:
      return error_domain == VIR_FROM_RPC ? absl::StatusCode::kUnavailable
                                          : absl::StatusCode::kInternal;
    default:
      return absl::StatusCode::kInternal;
  }
}

absl::Status LastLibvirtError(absl::string_view context) {
  virErrorPtr err = virGetLastError();
  if (err == nullptr || err->code == VIR_ERR_OK) {
    return absl::InternalError(absl::StrCat(context, ": libvirt call failed without an error"));
  }
  absl::Status status(MapLibvirtErrorCode(err->code, err->domain),
                      absl::StrCat(context, ": ", err->message ? err->message : "(no message)",
                                   " (libvirt error ", err->code, ")"));
  virResetLastError();
  return status;
}

namespace {

void LogLibvirtError(void* /*user_data*/, virErrorPtr err) {
  if (err == nullptr) return;
  LogDebug("libvirt error ", err->code, " (domain ", err->domain,
           "): ", err->message ? err->message : "");
}

}  // namespace

void RouteLibvirtErrorsToLog() { virSetErrorFunc(nullptr, LogLibvirtError); }

}  // namespace virtgate

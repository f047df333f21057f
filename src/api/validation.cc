#include "src/api/validation.h"

#include <cctype>

#include "absl/strings/str_cat.h"
#include "surplus/gpu_models.h"

namespace surplus::api {
namespace v1 = surplus::v1;

namespace {
absl::Status Bad(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

bool IsPrintable(const std::string& s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return false;
  }
  return true;
}
}  // namespace

absl::Status ValidateShape(const v1::Shape& shape, const std::string& gpu_model, const Limits& limits,
                           const std::string& field) {
  const GpuModel* model = nullptr;
  if (!gpu_model.empty()) {
    model = FindGpuModel(gpu_model);
    if (model == nullptr) {
      std::string known;
      for (const auto& m : GpuModels()) absl::StrAppend(&known, known.empty() ? "" : ", ", m.name);
      return Bad("spec.gpu_model", absl::StrCat("unknown GPU model '", gpu_model, "' (known: ", known, ")"));
    }
  }
  if (shape.cpu_millis() < 0 || shape.cpu_millis() > limits.max_cpu_millis) {
    return Bad(absl::StrCat(field, ".cpu_millis"),
               absl::StrCat("must be 0 (a share of the node in proportion to the GPUs) to ",
                            limits.max_cpu_millis, " millicores, got ", shape.cpu_millis()));
  }
  if (shape.memory_mib() < 0 || shape.memory_mib() > limits.max_memory_mib) {
    return Bad(absl::StrCat(field, ".memory_mib"),
               absl::StrCat("must be 0 (a share of the node in proportion to the GPUs) to ",
                            limits.max_memory_mib, " MiB, got ", shape.memory_mib()));
  }
  switch (shape.kind_case()) {
    case v1::Shape::kSliceProfile: {
      const std::string& p = shape.slice_profile();
      const bool known = model != nullptr ? model->FindProfile(p) != nullptr : IsKnownSliceProfile(p);
      if (!known) {
        return Bad(absl::StrCat(field, ".slice_profile"),
                   absl::StrCat("unknown slice profile '", p.substr(0, 64), "'",
                                model ? absl::StrCat(" for ", model->name) : "",
                                " (e.g. 1g.10gb, 2g.20gb, 3g.40gb, 4g.40gb, 7g.80gb)"));
      }
      return absl::OkStatus();
    }
    case v1::Shape::kWholeGpus: {
      const int n = shape.whole_gpus().count();
      if (n <= 0 || n > limits.max_gpus_per_node) {
        return Bad(absl::StrCat(field, ".whole_gpus.count"),
                   absl::StrCat("must be 1 to ", limits.max_gpus_per_node, ", got ", n));
      }
      return absl::OkStatus();
    }
    case v1::Shape::kGang: {
      const int k = shape.gang().nodes();
      const int n = shape.gang().gpus_per_node();
      if (k <= 0 || k > limits.max_gang_nodes) {
        return Bad(absl::StrCat(field, ".gang.nodes"),
                   absl::StrCat("must be 1 to ", limits.max_gang_nodes, ", got ", k));
      }
      if (n <= 0 || n > limits.max_gpus_per_node) {
        return Bad(absl::StrCat(field, ".gang.gpus_per_node"),
                   absl::StrCat("must be 1 to ", limits.max_gpus_per_node, ", got ", n));
      }
      return absl::OkStatus();
    }
    default:
      return Bad(field, "set one of slice_profile, whole_gpus or gang");
  }
}

absl::Status ValidateTerms(v1::Tier tier, int64_t bid, int64_t max_runtime_seconds,
                           const Limits& limits, const std::string& prefix) {
  if (!v1::Tier_IsValid(tier) || tier == v1::TIER_UNSPECIFIED) {
    return Bad(prefix + "tier", "must be TIER_SPOT or TIER_ON_DEMAND");
  }
  const std::string bid_field = prefix + "bid_micros_per_gpu_hour";
  if (bid < 0) return Bad(bid_field, "must not be negative");
  if (bid > limits.max_bid) {
    return Bad(bid_field, absl::StrCat("above the maximum of ", limits.max_bid, " micro-dollars per GPU-hour"));
  }
  if (tier == v1::TIER_SPOT && bid == 0) return Bad(bid_field, "a spot job needs a bid above zero");
  if (max_runtime_seconds < 0 || max_runtime_seconds > limits.max_runtime_seconds) {
    return Bad(prefix + "max_runtime_seconds",
               absl::StrCat("must be 0 (no limit) to ", limits.max_runtime_seconds));
  }
  return absl::OkStatus();
}

absl::Status ValidateJobSpec(const v1::JobSpec& spec, const Limits& limits) {
  if (spec.request_id().empty()) return Bad("spec.request_id", "required (a client-chosen idempotency key)");
  if (spec.request_id().size() > limits.max_request_id_bytes || !IsPrintable(spec.request_id())) {
    return Bad("spec.request_id",
               absl::StrCat("at most ", limits.max_request_id_bytes, " printable characters"));
  }
  if (spec.name().size() > limits.max_name_bytes || !IsPrintable(spec.name())) {
    return Bad("spec.name", absl::StrCat("at most ", limits.max_name_bytes, " printable characters"));
  }
  if (absl::Status s = ValidateTerms(spec.tier(), spec.bid_micros_per_gpu_hour(),
                                     spec.max_runtime_seconds(), limits, "spec.");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = ValidateShape(spec.shape(), spec.gpu_model(), limits, "spec.shape"); !s.ok()) return s;
  const v1::Workload& w = spec.workload();
  switch (w.kind_case()) {
    case v1::Workload::kExec: {
      const auto& e = w.exec();
      if (e.argv_size() == 0 || e.argv(0).empty()) return Bad("spec.workload.exec.argv", "must not be empty");
      if (e.argv_size() > limits.max_argv) {
        return Bad("spec.workload.exec.argv", absl::StrCat("at most ", limits.max_argv, " arguments"));
      }
      for (int i = 0; i < e.argv_size(); ++i) {
        if (e.argv(i).size() > limits.max_arg_bytes || e.argv(i).find('\0') != std::string::npos) {
          return Bad(absl::StrCat("spec.workload.exec.argv[", i, "]"),
                     absl::StrCat("at most ", limits.max_arg_bytes, " bytes, no NUL"));
        }
      }
      if (e.env_size() > limits.max_env) {
        return Bad("spec.workload.exec.env", absl::StrCat("at most ", limits.max_env, " variables"));
      }
      for (const auto& [k, val] : e.env()) {
        bool ok = !k.empty() && k.size() <= 256 && !std::isdigit(static_cast<unsigned char>(k[0]));
        for (char c : k) ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '_');
        if (!ok) return Bad("spec.workload.exec.env", absl::StrCat("bad variable name '", k.substr(0, 64), "'"));
        if (k.rfind("SURPLUS_", 0) == 0 || k.rfind("CUDA_", 0) == 0) {
          return Bad("spec.workload.exec.env", absl::StrCat("'", k, "' is set by the worker"));
        }
        if (val.size() > limits.max_env_bytes || val.find('\0') != std::string::npos) {
          return Bad(absl::StrCat("spec.workload.exec.env[", k, "]"),
                     absl::StrCat("at most ", limits.max_env_bytes, " bytes, no NUL"));
        }
      }
      return absl::OkStatus();
    }
    case v1::Workload::kBuiltin: {
      const auto& b = w.builtin();
      if (!v1::BuiltinKind_IsValid(b.kind()) || b.kind() == v1::BUILTIN_KIND_UNSPECIFIED) {
        return Bad("spec.workload.builtin.kind", "must be BUILTIN_KIND_SLEEP, _GEMM or _ALLREDUCE");
      }
      if (b.duration_ms() <= 0 || b.duration_ms() > limits.max_builtin_duration_ms) {
        return Bad("spec.workload.builtin.duration_ms",
                   absl::StrCat("must be 1 to ", limits.max_builtin_duration_ms));
      }
      if (b.params_size() > 32) return Bad("spec.workload.builtin.params", "at most 32 parameters");
      for (const auto& [k, val] : b.params()) {
        if (k.size() > 64 || val.size() > 256) {
          return Bad("spec.workload.builtin.params", "keys at most 64 bytes, values at most 256");
        }
      }
      return absl::OkStatus();
    }
    default:
      return Bad("spec.workload", "set exec (argv) or builtin");
  }
}

absl::Status ValidateTenantId(const std::string& id, const std::string& field) {
  bool ok = !id.empty() && id.size() <= 63 && std::islower(static_cast<unsigned char>(id[0]));
  for (char c : id) {
    ok = ok && (std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '-');
  }
  if (!ok) {
    return Bad(field, "1 to 63 lower-case letters, digits or '-', starting with a letter");
  }
  return absl::OkStatus();
}

absl::Status ValidateNodeName(const std::string& name, const std::string& field) {
  bool ok = !name.empty() && name.size() <= 253;
  for (char c : name) {
    ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_');
  }
  if (!ok) return Bad(field, "1 to 253 letters, digits, '.', '-' or '_'");
  return absl::OkStatus();
}

absl::Status ValidateCreateTenant(const v1::CreateTenantRequest& req) {
  if (absl::Status s = ValidateTenantId(req.id(), "id"); !s.ok()) return s;
  if (req.display_name().size() > 256 || !IsPrintable(req.display_name())) {
    return Bad("display_name", "at most 256 printable characters");
  }
  if (req.max_gpus() < 0) return Bad("max_gpus", "must not be negative");
  if (req.max_pending_jobs() < 0) return Bad("max_pending_jobs", "must not be negative");
  return absl::OkStatus();
}

absl::Status ValidateJobId(const std::string& id) {
  if (id.empty()) return Bad("job_id", "required");
  if (id.size() > 64 || !IsPrintable(id)) return Bad("job_id", "not a job id");
  return absl::OkStatus();
}

absl::Status ValidatePeriod(const std::string& period, const std::string& field) {
  bool ok = period.size() == 7 && period[4] == '-';
  for (size_t i = 0; ok && i < 7; ++i) {
    if (i != 4 && !std::isdigit(static_cast<unsigned char>(period[i]))) ok = false;
  }
  if (ok) {
    const int month = (period[5] - '0') * 10 + (period[6] - '0');
    ok = month >= 1 && month <= 12;
  }
  if (!ok) return Bad(field, absl::StrCat("must be YYYY-MM, got '", period.substr(0, 16), "'"));
  return absl::OkStatus();
}

}  // namespace surplus::api

// CodecParams: validation and the text form used by configs, the API and the CLI.
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kvtier/kernels/codec.h"

namespace kvtier::kernels {
namespace {

bool TqFieldsDefault(const CodecParams& p) {
  return p.tq_variant == TurboQuantVariant::kMse && p.tq_rotation == TurboQuantRotation::kHadamard &&
         p.tq_split == TurboQuantSplit::kNone && p.tq_qjl == TurboQuantQjl::kGaussian &&
         p.tq_matrix == TurboQuantMatrix::kFloat && p.seed == 0;
}
bool KiviFieldsDefault(const CodecParams& p) {
  return p.group_size == 0 && p.sink_tokens == 0 && p.tail_tokens == 0;
}

}  // namespace

TurboQuantQjl TurboQuantDefaultQjl(TurboQuantRotation rotation) {
  return rotation == TurboQuantRotation::kHadamard ? TurboQuantQjl::kHadamard
                                                   : TurboQuantQjl::kGaussian;
}

bool TurboQuantUsesMatrix(TurboQuantVariant variant, TurboQuantRotation rotation,
                          TurboQuantQjl qjl) {
  return rotation == TurboQuantRotation::kDense ||
         (variant == TurboQuantVariant::kProd && qjl == TurboQuantQjl::kGaussian);
}

const char* CodecName(CodecId id) {
  switch (id) {
    case CodecId::kRaw:
      return "raw";
    case CodecId::kFp8:
      return "fp8";
    case CodecId::kKivi:
      return "kivi";
    case CodecId::kTurboQuant:
      return "turboquant";
    case CodecId::kLatent:
      return "latent";
    case CodecId::kCompacted:
      return "compacted";
  }
  return "unknown";
}

absl::Status CodecParams::Validate() const {
  switch (id) {
    case CodecId::kRaw:
    case CodecId::kFp8:
    case CodecId::kLatent:
    case CodecId::kCompacted:
      if (bits != 0 || !KiviFieldsDefault(*this) || !TqFieldsDefault(*this)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "codec ", CodecName(id), " takes no parameters (bits, group_size, sink_tokens, "
            "tail_tokens, tq_* and seed must stay at their defaults)"));
      }
      return absl::OkStatus();
    case CodecId::kKivi:
      if (bits != 2 && bits != 4) {
        return absl::InvalidArgumentError(
            absl::StrCat("kivi: bits must be 2 or 4, got ", static_cast<int>(bits)));
      }
      if (group_size != 32 && group_size != 64 && group_size != 128) {
        return absl::InvalidArgumentError(
            absl::StrCat("kivi: group_size must be 32, 64 or 128, got ", group_size));
      }
      if (!TqFieldsDefault(*this)) {
        return absl::InvalidArgumentError("kivi: tq_variant, tq_rotation, tq_split, tq_qjl, "
                                          "tq_matrix and seed must stay at their defaults");
      }
      return absl::OkStatus();
    case CodecId::kTurboQuant:
      if (bits < 1 || bits > 4) {
        return absl::InvalidArgumentError(
            absl::StrCat("turboquant: bits must be 1..4, got ", static_cast<int>(bits)));
      }
      if (!KiviFieldsDefault(*this)) {
        return absl::InvalidArgumentError(
            "turboquant: group_size, sink_tokens and tail_tokens must be 0");
      }
      if (tq_variant != TurboQuantVariant::kMse && tq_variant != TurboQuantVariant::kProd) {
        return absl::InvalidArgumentError("turboquant: unknown variant");
      }
      if (tq_rotation != TurboQuantRotation::kHadamard &&
          tq_rotation != TurboQuantRotation::kDense) {
        return absl::InvalidArgumentError("turboquant: unknown rotation");
      }
      if (tq_split == TurboQuantSplit::k2p5 && bits != 2) {
        return absl::InvalidArgumentError("turboquant: split 2.5 requires bits = 2");
      }
      if (tq_split == TurboQuantSplit::k3p5 && bits != 3) {
        return absl::InvalidArgumentError("turboquant: split 3.5 requires bits = 3");
      }
      if (tq_split != TurboQuantSplit::kNone && tq_split != TurboQuantSplit::k2p5 &&
          tq_split != TurboQuantSplit::k3p5) {
        return absl::InvalidArgumentError("turboquant: unknown split");
      }
      if (tq_qjl != TurboQuantQjl::kGaussian && tq_qjl != TurboQuantQjl::kHadamard) {
        return absl::InvalidArgumentError("turboquant: unknown qjl projection");
      }
      if (tq_qjl != TurboQuantQjl::kGaussian && tq_variant != TurboQuantVariant::kProd) {
        return absl::InvalidArgumentError("turboquant: qjl applies to variant=prod only");
      }
      if (tq_matrix != TurboQuantMatrix::kFloat && tq_matrix != TurboQuantMatrix::kFixed) {
        return absl::InvalidArgumentError(absl::StrCat(
            "turboquant: unknown matrix arithmetic ", static_cast<int>(tq_matrix),
            " (0 = float, 1 = fixed)"));
      }
      if (tq_matrix == TurboQuantMatrix::kFixed &&
          !TurboQuantUsesMatrix(tq_variant, tq_rotation, tq_qjl)) {
        return absl::InvalidArgumentError(
            "turboquant: matrix=fixed needs a codec that uses a matrix (rotation=dense, or "
            "variant=prod with qjl=gaussian)");
      }
      return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown codec id ", static_cast<int>(id)));
}

std::string CodecParams::ToString() const {
  std::string s = CodecName(id);
  if (id == CodecId::kKivi) {
    absl::StrAppend(&s, ":b=", static_cast<int>(bits), ",g=", group_size);
    if (sink_tokens) absl::StrAppend(&s, ",sink=", sink_tokens);
    if (tail_tokens) absl::StrAppend(&s, ",tail=", tail_tokens);
  } else if (id == CodecId::kTurboQuant) {
    absl::StrAppend(&s, ":b=", static_cast<int>(bits));
    if (tq_variant == TurboQuantVariant::kProd) absl::StrAppend(&s, ",variant=prod");
    if (tq_rotation == TurboQuantRotation::kDense) absl::StrAppend(&s, ",rotation=dense");
    if (tq_split == TurboQuantSplit::k2p5) absl::StrAppend(&s, ",split=2.5");
    if (tq_split == TurboQuantSplit::k3p5) absl::StrAppend(&s, ",split=3.5");
    if (tq_variant == TurboQuantVariant::kProd && tq_qjl != TurboQuantDefaultQjl(tq_rotation)) {
      absl::StrAppend(&s, tq_qjl == TurboQuantQjl::kHadamard ? ",qjl=hadamard" : ",qjl=gaussian");
    }
    // The text default is fixed for a codec that uses a matrix, float otherwise.
    if (TurboQuantUsesMatrix(tq_variant, tq_rotation, tq_qjl)) {
      if (tq_matrix != TurboQuantMatrix::kFixed) absl::StrAppend(&s, ",matrix=float");
    } else if (tq_matrix != TurboQuantMatrix::kFloat) {
      absl::StrAppend(&s, ",matrix=fixed");  // invalid params: Validate() rejects them
    }
    if (seed) absl::StrAppend(&s, ",seed=", seed);
  }
  return s;
}

absl::StatusOr<CodecParams> CodecParams::Parse(const std::string& text) {
  const size_t colon = text.find(':');
  const std::string name = text.substr(0, colon);
  CodecParams p;
  std::optional<TurboQuantQjl> qjl;  // applied after the loop: its default depends on rotation
  std::optional<TurboQuantMatrix> matrix;  // likewise: its default depends on the whole codec
  if (name == "raw") {
    p.id = CodecId::kRaw;
  } else if (name == "fp8") {
    p.id = CodecId::kFp8;
  } else if (name == "kivi") {
    p.id = CodecId::kKivi;
    p.bits = 2;  // the paper's settings (docs/FORMAT.md, "kivi")
    p.group_size = 32;
  } else if (name == "turboquant") {
    p.id = CodecId::kTurboQuant;
    p.bits = 3;
  } else if (name == "latent") {
    p.id = CodecId::kLatent;
  } else if (name == "compacted") {
    p.id = CodecId::kCompacted;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown codec '", name, "' (expected raw, fp8, kivi, turboquant, latent or compacted)"));
  }
  if (colon != std::string::npos) {
    const std::string rest = text.substr(colon + 1);
    if (rest.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("codec '", text, "': empty parameter list"));
    }
    std::vector<std::string> seen;
    for (absl::string_view item : absl::StrSplit(rest, ',')) {
      const size_t eq = item.find('=');
      if (eq == absl::string_view::npos || eq == 0 || eq + 1 == item.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("codec '", text, "': expected key=value, got '", item, "'"));
      }
      const std::string key(item.substr(0, eq));
      const std::string value(item.substr(eq + 1));
      for (const auto& k : seen) {
        if (k == key) {
          return absl::InvalidArgumentError(
              absl::StrCat("codec '", text, "': parameter '", key, "' given twice"));
        }
      }
      seen.push_back(key);
      auto bad_value = [&] {
        return absl::InvalidArgumentError(
            absl::StrCat("codec '", text, "': bad value '", value, "' for '", key, "'"));
      };
      auto parse_uint = [&](uint64_t max, uint64_t* out) -> bool {
        uint64_t v = 0;
        if (!absl::SimpleAtoi(value, &v) || v > max || value[0] == '+' || value[0] == '-') {
          return false;
        }
        *out = v;
        return true;
      };
      uint64_t v = 0;
      const bool kivi = p.id == CodecId::kKivi;
      const bool tq = p.id == CodecId::kTurboQuant;
      if (key == "b" && (kivi || tq)) {
        if (!parse_uint(255, &v)) return bad_value();
        p.bits = static_cast<uint8_t>(v);
      } else if (key == "g" && kivi) {
        if (!parse_uint(65535, &v)) return bad_value();
        p.group_size = static_cast<uint16_t>(v);
      } else if (key == "sink" && kivi) {
        if (!parse_uint(65535, &v)) return bad_value();
        p.sink_tokens = static_cast<uint16_t>(v);
      } else if (key == "tail" && kivi) {
        if (!parse_uint(65535, &v)) return bad_value();
        p.tail_tokens = static_cast<uint16_t>(v);
      } else if (key == "variant" && tq) {
        if (value == "mse") p.tq_variant = TurboQuantVariant::kMse;
        else if (value == "prod") p.tq_variant = TurboQuantVariant::kProd;
        else return bad_value();
      } else if (key == "rotation" && tq) {
        if (value == "hadamard") p.tq_rotation = TurboQuantRotation::kHadamard;
        else if (value == "dense") p.tq_rotation = TurboQuantRotation::kDense;
        else return bad_value();
      } else if (key == "split" && tq) {
        if (value == "none") p.tq_split = TurboQuantSplit::kNone;
        else if (value == "2.5") p.tq_split = TurboQuantSplit::k2p5;
        else if (value == "3.5") p.tq_split = TurboQuantSplit::k3p5;
        else return bad_value();
      } else if (key == "qjl" && tq) {
        if (value == "gaussian") qjl = TurboQuantQjl::kGaussian;
        else if (value == "hadamard") qjl = TurboQuantQjl::kHadamard;
        else return bad_value();
      } else if (key == "matrix" && tq) {
        if (value == "fixed") matrix = TurboQuantMatrix::kFixed;
        else if (value == "float") matrix = TurboQuantMatrix::kFloat;
        else return bad_value();
      } else if (key == "seed" && tq) {
        if (!parse_uint(~uint64_t{0}, &v)) return bad_value();
        p.seed = v;
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("codec '", text, "': unknown parameter '", key, "' for ", name));
      }
    }
  }
  if (qjl.has_value() && p.tq_variant != TurboQuantVariant::kProd) {
    return absl::InvalidArgumentError(
        absl::StrCat("codec '", text, "': qjl applies to variant=prod only"));
  }
  if (p.id == CodecId::kTurboQuant && p.tq_variant == TurboQuantVariant::kProd) {
    p.tq_qjl = qjl.value_or(TurboQuantDefaultQjl(p.tq_rotation));
  }
  if (p.id == CodecId::kTurboQuant) {
    const bool uses = TurboQuantUsesMatrix(p.tq_variant, p.tq_rotation, p.tq_qjl);
    if (!uses && matrix == TurboQuantMatrix::kFixed) {
      return absl::InvalidArgumentError(absl::StrCat(
          "codec '", text, "': matrix=fixed needs rotation=dense or variant=prod with "
          "qjl=gaussian (this codec uses no dense matrix)"));
    }
    p.tq_matrix = uses ? matrix.value_or(TurboQuantMatrix::kFixed) : TurboQuantMatrix::kFloat;
  }
  if (absl::Status s = p.Validate(); !s.ok()) return s;
  return p;
}

bool operator==(const CodecParams& a, const CodecParams& b) {
  return a.id == b.id && a.bits == b.bits && a.group_size == b.group_size &&
         a.sink_tokens == b.sink_tokens && a.tail_tokens == b.tail_tokens &&
         a.tq_variant == b.tq_variant && a.tq_rotation == b.tq_rotation &&
         a.tq_split == b.tq_split && a.tq_qjl == b.tq_qjl && a.tq_matrix == b.tq_matrix &&
         a.seed == b.seed;
}

}  // namespace kvtier::kernels

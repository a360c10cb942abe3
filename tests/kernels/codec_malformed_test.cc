// Every malformed payload is rejected with a clear status and nothing is written: truncation at
// every length, every flipped byte, wrong versions, impossible parameters, layout mismatches.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "codec_test_util.h"
#include "codecs/format.h"
#include "kvtier/common/crc32c.h"
#include "kvtier/common/status.h"
#include "kvtier/kernels/codec.h"

namespace kvtier::kernels {
namespace {

constexpr size_t kHeader = 96;

std::vector<uint8_t> SmallPayload(const char* codec, const KvLayout& l, uint32_t tokens) {
  const auto in = testing::RandomChunk(l, tokens, 5);
  ChunkInput ci;
  ci.data = in.data();
  ci.layout = l;
  ci.num_tokens = tokens;
  std::vector<uint8_t> payload;
  KVTIER_CHECK_OK(Encode(*CodecParams::Parse(codec), ci, &payload));
  return payload;
}

// Rewrites the header CRC after an edit so that the edit itself is what gets checked.
void FixHeaderCrc(std::vector<uint8_t>* p) {
  const uint32_t crc = Crc32c(p->data(), 92);
  std::memcpy(p->data() + 92, &crc, 4);
}

absl::Status DecodeInto(const std::vector<uint8_t>& payload, const KvLayout& l, uint32_t tokens,
                        std::vector<uint8_t>* out) {
  out->assign(l.ChunkBytes(tokens), 0xA5);
  return Decode(payload, DecodeTarget::Contiguous(out->data(), l, tokens));
}

bool AllPoison(const std::vector<uint8_t>& b) {
  for (uint8_t x : b) {
    if (x != 0xA5) return false;
  }
  return true;
}

const char* kCodecs[] = {"raw", "fp8", "kivi:b=2,g=32,sink=1"};

TEST(CodecMalformedTest, EveryTruncationIsRejected) {
  const KvLayout l = KvLayout::Mha(1, 1, 1, 32);
  for (const char* codec : kCodecs) {
    const auto payload = SmallPayload(codec, l, 40);
    std::vector<uint8_t> out;
    for (size_t n = 0; n < payload.size(); ++n) {
      std::vector<uint8_t> cut(payload.begin(), payload.begin() + n);
      const absl::Status s = DecodeInto(cut, l, 40, &out);
      ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << codec << " n=" << n << " " << s;
      ASSERT_TRUE(AllPoison(out)) << codec << " n=" << n;
    }
    std::vector<uint8_t> longer = payload;
    longer.push_back(0);
    EXPECT_EQ(InspectPayload(longer).status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(DecodeInto(payload, l, 40, &out).ok());
  }
}

TEST(CodecMalformedTest, EveryFlippedByteIsRejected) {
  const KvLayout l = KvLayout::Mha(1, 1, 1, 32);
  for (const char* codec : kCodecs) {
    const auto payload = SmallPayload(codec, l, 40);
    std::vector<uint8_t> out;
    for (size_t i = 0; i < payload.size(); ++i) {
      for (uint8_t mask : {0x01, 0x80}) {
        std::vector<uint8_t> bad = payload;
        bad[i] ^= mask;
        const absl::Status s = DecodeInto(bad, l, 40, &out);
        ASSERT_FALSE(s.ok()) << codec << " byte " << i;
        if (i >= kHeader) {
          ASSERT_EQ(s.code(), absl::StatusCode::kDataLoss) << codec << " byte " << i << " " << s;
        } else {
          ASSERT_TRUE(s.code() == absl::StatusCode::kDataLoss ||
                      s.code() == absl::StatusCode::kInvalidArgument ||
                      s.code() == absl::StatusCode::kUnimplemented)
              << codec << " byte " << i << " " << s;
        }
        ASSERT_TRUE(AllPoison(out)) << codec << " byte " << i;
      }
    }
  }
}

// InspectPayload with the caller's CRC of the whole payload, computed over this very buffer (one
// pass for transport and body checks): accepts what the plain InspectPayload accepts; a flipped
// body byte is DataLoss; a CRC of other bytes is DataLoss.
TEST(CodecMalformedTest, InspectWithKnownCrcChecksAsTheFullPass) {
  const KvLayout l = KvLayout::Mha(1, 1, 1, 32);
  for (const char* codec : kCodecs) {
    const auto payload = SmallPayload(codec, l, 40);
    const uint32_t whole = Crc32c(payload.data(), payload.size());
    auto ok = InspectPayload(payload, whole);
    ASSERT_TRUE(ok.ok()) << codec << " " << ok.status();
    EXPECT_EQ(ok->body_bytes, InspectPayload(payload)->body_bytes);
    EXPECT_EQ(InspectPayload(payload, whole ^ 0x10).status().code(), absl::StatusCode::kDataLoss);
    for (size_t i = kHeader; i < payload.size(); i += 7) {
      std::vector<uint8_t> bad = payload;
      bad[i] ^= 0x04;
      const uint32_t bad_whole = Crc32c(bad.data(), bad.size());
      EXPECT_EQ(InspectPayload(bad, bad_whole).status().code(), absl::StatusCode::kDataLoss)
          << codec << " byte " << i;
    }
  }
}

TEST(CodecMalformedTest, VersionsAndMagic) {
  const KvLayout l = KvLayout::Mha(1, 1, 1, 32);
  auto p = SmallPayload("fp8", l, 4);
  auto v2 = p;
  v2[4] = 2;
  FixHeaderCrc(&v2);
  auto s = InspectPayload(v2).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented) << s;
  EXPECT_NE(s.message().find("version 2"), absl::string_view::npos) << s;
  auto v0 = p;
  v0[4] = 0;
  FixHeaderCrc(&v0);
  EXPECT_EQ(InspectPayload(v0).status().code(), absl::StatusCode::kInvalidArgument);
  auto magic = p;
  magic[0] = 'X';
  EXPECT_EQ(InspectPayload(magic).status().code(), absl::StatusCode::kInvalidArgument);
  auto hsize = p;
  hsize[6] = 64;
  FixHeaderCrc(&hsize);
  EXPECT_EQ(InspectPayload(hsize).status().code(), absl::StatusCode::kInvalidArgument);
  auto crc = p;
  crc[92] ^= 1;
  EXPECT_EQ(InspectPayload(crc).status().code(), absl::StatusCode::kDataLoss);
}

// Header edits with a valid header CRC: impossible parameters, layouts, sizes, flags.
TEST(CodecMalformedTest, ImpossibleHeaderFieldsAreInvalidArgument) {
  const KvLayout l = KvLayout::Mha(1, 1, 1, 32);
  const auto p = SmallPayload("kivi:b=2,g=32", l, 32);
  struct Edit {
    size_t offset;
    uint8_t value;
    const char* what;
  };
  const Edit edits[] = {
      {8, 9, "unknown codec"},        {9, 3, "kivi bits 3"},        {10, 48, "group 48"},
      {10, 0, "group 0"},             {16, 1, "tq field on kivi"},  {19, 1, "qjl on kivi"},
      {20, 1, "seed on kivi"},        {28, 3, "unknown kind"},      {29, 7, "unknown dtype"},
      {30, 1, "matrix on kivi"},      {30, 2, "unknown matrix"},    {31, 1, "reserved 31"},
      {32, 0, "zero layers"},       {36, 0, "zero kv heads"},
      {40, 0, "zero query heads"},         {44, 0, "zero head_dim"},     {48, 1, "latent on MHA"},
      {56, 0, "zero tokens"},         {56, 33, "token count vs body"}, {60, 2, "unknown flag"},
      {72, 1, "body size"},           {84, 1, "reserved 84"},       {9, 4, "bits vs body"},
      {45, 1, "head_dim 288 vs body"}, {59, 0x10, "tokens > limit"},
  };
  for (const Edit& e : edits) {
    auto bad = p;
    bad[e.offset] = e.value;
    FixHeaderCrc(&bad);
    const absl::Status s = InspectPayload(bad).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << e.what << ": " << s;
    std::vector<uint8_t> out;
    EXPECT_FALSE(DecodeInto(bad, l, 32, &out).ok()) << e.what;
    EXPECT_TRUE(AllPoison(out)) << e.what;
  }
  // Turning a kivi payload into a turboquant one: Unimplemented when turboquant is not built,
  // InvalidArgument (params or size) otherwise.
  auto tq = p;
  tq[8] = 3;
  tq[10] = 0;
  FixHeaderCrc(&tq);
  const absl::StatusCode code = InspectPayload(tq).status().code();
  EXPECT_TRUE(code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kUnimplemented);
}

TEST(CodecMalformedTest, TargetMismatchesAreRejectedBeforeWriting) {
  const KvLayout l = KvLayout::Mha(2, 2, 2, 32);
  const auto p = SmallPayload("fp8", l, 8);
  std::vector<uint8_t> out(l.ChunkBytes(8), 0xA5);
  DecodeTarget good = DecodeTarget::Contiguous(out.data(), l, 8);
  {
    DecodeTarget t = good;
    t.dtype = DType::kBFloat16;
    EXPECT_EQ(Decode(p, t).code(), absl::StatusCode::kInvalidArgument);
  }
  {
    DecodeTarget t = good;
    t.layer_base.pop_back();
    EXPECT_EQ(Decode(p, t).code(), absl::StatusCode::kInvalidArgument);
  }
  {
    DecodeTarget t = good;
    t.layer_base[1] = nullptr;
    EXPECT_EQ(Decode(p, t).code(), absl::StatusCode::kInvalidArgument);
  }
  {
    DecodeTarget t = good;
    const int32_t table[2] = {0, 1};
    t.block_table = table;
    t.block_size = 0;
    EXPECT_EQ(Decode(p, t).code(), absl::StatusCode::kInvalidArgument);
    const int32_t neg[2] = {0, -1};
    t.block_table = neg;
    t.block_size = 4;
    EXPECT_EQ(Decode(p, t).code(), absl::StatusCode::kInvalidArgument);
  }
#ifndef KVTIER_HAVE_CUDA
  {
    DecodeTarget t = good;
    t.space = MemorySpace::kDevice;
    EXPECT_EQ(Decode(p, t).code(), absl::StatusCode::kInvalidArgument);
  }
#endif
  for (uint8_t b : out) ASSERT_EQ(b, 0xA5);
  EXPECT_TRUE(Decode(p, good).ok());
}

}  // namespace
}  // namespace kvtier::kernels

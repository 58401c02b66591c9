#include "openvid/text/tokenizer.h"

#include <ATen/ATen.h>
#include <sentencepiece_processor.h>

#include <algorithm>
#include <filesystem>

#include "openvid/runtime/error.h"

namespace ov::text {

Tokenizer::Tokenizer(const std::string& path) : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  namespace fs = std::filesystem;
  path_ = fs::is_directory(path) ? (fs::path(path) / "spiece.model").string() : path;
  if (!fs::is_regular_file(path_)) {
    throw InputError("tokenizer model '" + path_ + "' does not exist: pass a SentencePiece spiece.model (a T5 tokenizer folder, "
                     "e.g. FLUX.1-dev's tokenizer_2/) or the folder holding it");
  }
  const sentencepiece::util::Status status = sp_->Load(path_);
  if (!status.ok()) {
    throw InputError("tokenizer model '" + path_ + "' is not a SentencePiece model (" + status.ToString() +
                     "): pass a T5 tokenizer's spiece.model");
  }
  // T5's conventions: pad 0, EOS 1. A model without them cannot make the reference's ids.
  pad_id_ = sp_->pad_id();
  eos_id_ = sp_->eos_id();
  if (pad_id_ < 0 || eos_id_ < 0) {
    throw InputError("tokenizer model '" + path_ + "' defines no " + std::string(pad_id_ < 0 ? "pad" : "EOS") +
                     " piece, which T5's tokenization needs (T5's spiece.model has pad 0 and EOS 1)");
  }
}

Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

int64_t Tokenizer::vocab_size() const { return sp_->GetPieceSize(); }

std::vector<int64_t> Tokenizer::encode(std::string_view text, int64_t length, bool* truncated) const {
  OV_CHECK(length >= 1, "a token length must be at least 1 (room for EOS)");
  std::vector<int> pieces;
  const sentencepiece::util::Status status = sp_->Encode(text, &pieces);
  if (!status.ok()) throw InputError("tokenizer '" + path_ + "' could not encode a caption: " + status.ToString());
  const auto kept = std::min<int64_t>(static_cast<int64_t>(pieces.size()), length - 1);
  if (truncated != nullptr) *truncated = kept < static_cast<int64_t>(pieces.size());
  std::vector<int64_t> ids(pieces.begin(), pieces.begin() + kept);
  ids.push_back(eos_id_);
  ids.resize(static_cast<size_t>(length), pad_id_);
  return ids;
}

at::Tensor Tokenizer::encode(const std::vector<std::string>& texts, int64_t length) const {
  at::Tensor out = at::empty({static_cast<int64_t>(texts.size()), length}, at::kLong);
  int64_t* p = out.data_ptr<int64_t>();
  for (const std::string& t : texts) {
    const std::vector<int64_t> ids = encode(t, length);
    p = std::copy(ids.begin(), ids.end(), p);
  }
  return out;
}

}  // namespace ov::text

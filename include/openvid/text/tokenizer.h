#pragma once
// T5's tokenizer: a SentencePiece model (spiece.model), as the reference trainer calls Hugging Face's
// T5 tokenizer with padding="max_length", max_length=L, truncation=True: the pieces' ids, cut to L - 1,
// then EOS, then the pad id up to L. No attention mask comes with them: the encoder sees the padding.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace ov::text {

class Tokenizer {
 public:
  // Loads a SentencePiece model file (a T5 tokenizer folder's spiece.model, or the folder holding it).
  // Throws InputError naming the path when it is missing or not a SentencePiece model.
  explicit Tokenizer(const std::string& path);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  // Exactly `length` ids (length >= 1). `truncated`, when given, says whether pieces were cut off.
  std::vector<int64_t> encode(std::string_view text, int64_t length, bool* truncated = nullptr) const;
  // [texts, length] int64 on the CPU.
  at::Tensor encode(const std::vector<std::string>& texts, int64_t length) const;

  int64_t vocab_size() const;
  int64_t pad_id() const { return pad_id_; }
  int64_t eos_id() const { return eos_id_; }
  const std::string& path() const { return path_; }

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::string path_;
  int64_t pad_id_ = 0, eos_id_ = 1;
};

}  // namespace ov::text

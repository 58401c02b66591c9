#pragma once
// TensorBoard event files, so that `tensorboard --logdir RUN_DIR/tensorboard` shows a run: scalars (loss,
// eval loss, learning rate, gradient norm, throughput, MFU, memory, data wait, phase times) and images.
//
// The format is TensorFlow's: a TFRecord file (each record: its length, a masked CRC-32C of the length,
// the bytes, a masked CRC-32C of the bytes) of `Event` protocol buffers. The few messages and fields used
// here (Event, Summary, Summary.Value, Summary.Image, SessionLog) are encoded by hand in protobuf's wire
// format: generated protobuf code would need TensorBoard's .proto files and protoc at build time and a
// second protobuf runtime beside LibTorch's own (whose symbols clash, as SentencePiece's did). The CRC is
// Boost.CRC's (Castagnoli polynomial).
#include <cstdint>
#include <fstream>
#include <string>

namespace ov::train {

class TensorBoardWriter {
 public:
  // Creates `dir` and a new events file in it (events.out.tfevents.<seconds>.<host>.<pid>).
  // `resumed_at` > 0 first records that the run restarts at that step: TensorBoard then drops the events of
  // that step and later ones that earlier files hold (written before the checkpoint the run resumed from was
  // superseded).
  explicit TensorBoardWriter(const std::string& dir, int64_t resumed_at = 0);

  void scalar(const std::string& tag, int64_t step, double value);
  // `png`: a whole PNG file's bytes.
  void image(const std::string& tag, int64_t step, const std::string& png, int width, int height);
  void flush();
  const std::string& path() const { return path_; }

 private:
  void record(const std::string& event);
  std::string path_;
  std::ofstream out_;
};

}  // namespace ov::train

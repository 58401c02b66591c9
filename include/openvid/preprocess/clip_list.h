#pragma once
// The clip list a preprocessing job starts from: a CSV file with a header row (OpenVid-1M's columns
// `video, caption, aesthetic score, motion score, temporal consistency score, camera motion, frame, fps,
// seconds` by default), one row per clip, and filters on its numeric columns.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace ov::preprocess {

// RFC 4180 CSV: comma-separated fields, optionally in double quotes (a quote doubled inside), line breaks
// inside quotes, LF or CRLF rows. Written here (a state machine of a few lines) because the packaged CSV
// library (libcsv) reports no line numbers for its errors. Throws InputError naming the file and line.
// `lines`, when given, receives each row's first line in the file (a row whose quoted field holds line breaks
// spans several lines, so rows and lines differ after it).
std::vector<std::vector<std::string>> read_csv(const std::string& path, std::vector<int64_t>* lines = nullptr);

// "aesthetic score>=4.5": a numeric column compared with a number (>=, <=, >, <, ==, !=).
struct Filter {
  std::string column, op;
  double value = 0;
  std::string text;  // as given
};
Filter parse_filter(const std::string& text);

struct Clip {
  int64_t row = 0;      // data row in the CSV (1 = the first row after the header)
  int64_t line = 0;     // the row's first line in the file (1 = the header's)
  std::string video;    // as in the CSV (relative to the video root unless absolute)
  std::string caption;
};

struct ClipList {
  std::vector<Clip> clips;                                  // rows that pass every filter, in file order
  std::vector<std::pair<Clip, std::string>> filtered_out;  // the others, with the reason
};

// Reads `path`, finds the named columns (InputError listing the header's columns when one is missing)
// and applies the filters: a row whose filtered value is not a number, or that fails a filter, is left out
// with the reason; so is a row without a video path.
ClipList read_clip_list(const std::string& path, const std::string& video_column, const std::string& caption_column,
                        const std::vector<Filter>& filters);

}  // namespace ov::preprocess

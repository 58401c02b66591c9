#include "openvid/preprocess/clip_list.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "openvid/runtime/error.h"

namespace ov::preprocess {

std::vector<std::vector<std::string>> read_csv(const std::string& path, std::vector<int64_t>* lines) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError("clip list '" + path + "' cannot be read");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false, was_quoted = false;
  int64_t line = 1, quote_line = 0, row_line = 1;
  auto end_field = [&] {
    row.push_back(std::move(field));
    field.clear();
    was_quoted = false;
  };
  auto end_row = [&] {
    end_field();
    if (!(row.size() == 1 && row[0].empty())) {  // blank lines are skipped
      rows.push_back(std::move(row));
      if (lines != nullptr) lines->push_back(row_line);
    }
    row.clear();
  };
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        if (c == '\n') ++line;
        field += c;
      }
    } else if (c == '"') {
      if (!field.empty() || was_quoted) {
        throw InputError("clip list '" + path + "', line " + std::to_string(line) + ": a quote inside an unquoted field (quote the whole field and double the quote)");
      }
      quoted = was_quoted = true;
      quote_line = line;
    } else if (c == ',') {
      end_field();
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      end_row();
      row_line = ++line;
    } else {
      if (was_quoted) throw InputError("clip list '" + path + "', line " + std::to_string(line) + ": text after a quoted field's closing quote");
      field += c;
    }
  }
  if (quoted) throw InputError("clip list '" + path + "': the quote opened on line " + std::to_string(quote_line) + " is never closed");
  if (!field.empty() || !row.empty()) end_row();
  return rows;
}

Filter parse_filter(const std::string& text) {
  for (const char* op : {">=", "<=", "==", "!=", ">", "<"}) {
    const size_t at = text.find(op);
    if (at == std::string::npos || at == 0) continue;
    Filter f;
    f.text = text;
    f.op = op;
    auto trim = [](std::string s) {
      s.erase(0, s.find_first_not_of(" \t"));
      s.erase(s.find_last_not_of(" \t") + 1);
      return s;
    };
    f.column = trim(text.substr(0, at));
    const std::string number = trim(text.substr(at + std::string(op).size()));
    char* end = nullptr;
    errno = 0;
    f.value = std::strtod(number.c_str(), &end);
    if (number.empty() || end != number.c_str() + number.size() || errno != 0) break;
    return f;
  }
  throw InputError("--filter '" + text + "' is not COLUMN OP NUMBER with OP one of >= <= > < == != (e.g. --filter 'aesthetic score>=4.5')");
}

namespace {

bool passes(double v, const Filter& f) {
  if (f.op == ">=") return v >= f.value;
  if (f.op == "<=") return v <= f.value;
  if (f.op == ">") return v > f.value;
  if (f.op == "<") return v < f.value;
  if (f.op == "==") return v == f.value;
  return v != f.value;
}

}  // namespace

ClipList read_clip_list(const std::string& path, const std::string& video_column, const std::string& caption_column,
                        const std::vector<Filter>& filters) {
  std::vector<int64_t> lines;
  const auto rows = read_csv(path, &lines);
  if (rows.empty()) throw InputError("clip list '" + path + "' is empty: it needs a header row naming its columns");
  const std::vector<std::string>& header = rows[0];
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < header.size(); ++i) index.emplace(header[i], i);
  auto column = [&](const std::string& name, const char* what) {
    const auto it = index.find(name);
    if (it == index.end()) {
      std::string names;
      for (const std::string& h : header) names += (names.empty() ? "'" : ", '") + h + "'";
      throw InputError("clip list '" + path + "' has no column '" + name + "' (" + what + "); its columns: " + names);
    }
    return it->second;
  };
  const size_t video = column(video_column, "--video_column"), caption = column(caption_column, "--caption_column");
  std::vector<size_t> filter_columns;
  for (const Filter& f : filters) filter_columns.push_back(column(f.column, ("--filter '" + f.text + "'").c_str()));
  ClipList out;
  for (size_t r = 1; r < rows.size(); ++r) {
    const std::vector<std::string>& row = rows[r];
    Clip clip;
    clip.row = static_cast<int64_t>(r);
    clip.line = lines[r];
    clip.video = video < row.size() ? row[video] : "";
    clip.caption = caption < row.size() ? row[caption] : "";
    std::string reason;
    if (row.size() != header.size()) {
      reason = "row has " + std::to_string(row.size()) + " fields, the header " + std::to_string(header.size());
    } else if (clip.video.empty()) {
      reason = "no video path";
    }
    for (size_t k = 0; k < filters.size() && reason.empty(); ++k) {
      const std::string& cell = row[filter_columns[k]];
      char* end = nullptr;
      const double v = std::strtod(cell.c_str(), &end);
      if (cell.empty() || end != cell.c_str() + cell.size()) reason = "'" + filters[k].column + "' is not a number: '" + cell + "'";
      else if (!passes(v, filters[k])) reason = "filtered out by '" + filters[k].text + "' (" + cell + ")";
    }
    if (reason.empty()) out.clips.push_back(std::move(clip));
    else out.filtered_out.emplace_back(std::move(clip), std::move(reason));
  }
  return out;
}

}  // namespace ov::preprocess

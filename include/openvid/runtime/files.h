#pragma once
// Small files that must reach the disk whole (trainer.json, COMPLETE markers, config.ini).
#include <string>

namespace ov {

// Writes `text` to `path` (replacing it) and fsyncs it. Throws ov::Error naming the file and the system's
// reason (e.g. "No space left on device") when any part fails.
void write_file_durably(const std::string& path, const std::string& text);

// fsync of a file or a directory (after a rename in it); errors are ignored (not every file system has it).
void fsync_path(const std::string& path);

}  // namespace ov

#include "openvid/config/options.h"

#include <boost/program_options.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <fstream>
#include <map>
#include <sstream>
#include <type_traits>

#include "openvid/runtime/error.h"
#include "option_list.h"

namespace po = boost::program_options;

namespace ov {
using namespace config_detail;
namespace {

// Other spellings accepted on the command line and in files (after '-' -> '_').
const std::map<std::string, std::string>& aliases() {
  static const std::map<std::string, std::string> kAliases = {
      {"eval_every", "evaluate_every"},
      {"lr", "learning_rate"},
      {"lr_schedule", "lr_scheduler_type"},
      {"model_bias_and_norm_affine", "train_bias_and_rms"},
      {"bias_and_norm_affine", "train_bias_and_rms"},
      {"model_init_std_factor", "init_std_factor"},
      {"model_recompute_every", "recompute_every"},
  };
  return kAliases;
}

std::string canonical_name(std::string name) {
  std::replace(name.begin(), name.end(), '-', '_');
  const auto it = aliases().find(name);
  return it == aliases().end() ? name : it->second;
}

// The option name nearest to `word` by edit distance (over '_' and '-' alike), when it is near enough to be a
// typo of it: within a third of the word's length (at least 2). Boost offers near names only for
// ambiguous prefixes, not for unknown names.
std::string nearest_option(const po::options_description& desc, std::string word) {
  while (!word.empty() && word.front() == '-') word.erase(0, 1);
  word = canonical_name(word);
  auto distance = [](const std::string& a, const std::string& b) {
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
      size_t diagonal = row[0];
      row[0] = i;
      for (size_t j = 1; j <= b.size(); ++j) {
        const size_t up = row[j];
        row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
        diagonal = up;
      }
    }
    return row[b.size()];
  };
  std::string best;
  size_t best_distance = std::max<size_t>(2, word.size() / 3) + 1;
  for (const auto& option : desc.options()) {
    const std::string name = option->long_name();
    const size_t d = distance(word, name);
    if (d < best_distance) {
      best_distance = d;
      best = name;
    }
  }
  return best;
}

// " (did you mean --x?)" for an unknown option with a near name, else "".
std::string suggestion(const po::options_description& desc, const std::string& word) {
  const std::string near = nearest_option(desc, word);
  return near.empty() ? "" : " (did you mean --" + near + "?)";
}

// Boost's message for a command-line error, with the near option name of an unknown one.
std::string command_line_error(const po::options_description& desc, const po::error& e) {
  const auto* unknown = dynamic_cast<const po::unknown_option*>(&e);
  return std::string(e.what()) + (unknown != nullptr ? suggestion(desc, unknown->get_option_name()) : "") + " (see --help)";
}


template <typename T>
std::string to_text(const T& v) {
  if constexpr (std::is_enum_v<T>) {
    return choice_word(v);
  } else if constexpr (std::is_same_v<T, bool>) {
    return v ? "true" : "false";
  } else if constexpr (std::is_same_v<T, std::string>) {
    return v;
  } else {
    char buf[64];
    const auto res = std::to_chars(buf, buf + sizeof(buf), v);  // shortest form that reads back exactly
    return std::string(buf, res.ptr);
  }
}

const char* group_title(Group g) {
  switch (g) {
    case Group::kParallel: return "Parallel layout and runtime";
    case Group::kData: return "Data";
    case Group::kOptim: return "Optimisation";
    case Group::kRun: return "Run, logs and checkpoints";
    case Group::kModel: return "Model";
  }
  return "";
}

constexpr Group kGroups[] = {Group::kParallel, Group::kData, Group::kOptim, Group::kRun, Group::kModel};

// Options of the reference trainer that have no counterpart here: accepted (so that its command lines and
// job scripts run unchanged), never used, each with the reason the job prints.
struct ReferenceOnly {
  const char* name;
  const char* why;
};
constexpr ReferenceOnly kReferenceOnly[] = {
    {"compile_strat", "openvid's kernels are compiled ahead of time; there is no torch.compile strategy to choose"},
    {"project_name", "openvid logs to metrics.jsonl in the run directory; there is no experiment tracker to name"},
    {"return_index", "a detail of the reference's data loader; openvid's reader needs none"},
};

// Descriptions bound to `o`: parsing writes straight into it.
struct Descriptions {
  po::options_description general{"General"};
  std::map<Group, po::options_description> groups;
  po::options_description reference{"Accepted from the reference trainer's command lines, without effect", 120, 70};
  po::options_description all{"openvid options"};
};

std::unique_ptr<Descriptions> describe(Options& o) {
  auto d = std::make_unique<Descriptions>();
  d->general.add_options()
      ("help,h", "print this help and exit")
      ("version", "print the version and exit")
      ("config", po::value<std::string>(&o.config_file),
       "INI file of options (key = value; [model] keys get the model_ prefix); the command line wins");
  // Wide enough that no option name or alias is broken across lines.
  for (Group g : kGroups) d->groups.emplace(g, po::options_description(group_title(g), 120, 70));
  for_each_option(o, [&](const char* name, auto& field, const char* description, Group g) {
    using T = std::remove_reference_t<decltype(field)>;
    std::string help = description, also;  // with the other spellings, so that --help shows every accepted name
    for (const auto& [alias, canonical] : aliases()) {
      if (canonical == name) also += (also.empty() ? " (also " : ", ") + std::string("--") + alias;
    }
    if (!also.empty()) help += also + ")";
    if constexpr (std::is_enum_v<T>) {  // read as a word, parsed once into the enum when notified
      auto* v = po::value<std::string>()->default_value(to_text(field))->notifier(
          [&field, option = std::string(name)](const std::string& word) { field = parse_choice<T>(option, word); });
      d->groups.at(g).add_options()(name, v, help.c_str());
    } else {
      auto* v = po::value<T>(&field)->default_value(field, to_text(field));
      if constexpr (std::is_same_v<T, bool>) v->implicit_value(true, "true");
      d->groups.at(g).add_options()(name, v, help.c_str());
    }
  });
  for (const ReferenceOnly& r : kReferenceOnly) {
    d->reference.add_options()(r.name, po::value<std::string>()->implicit_value("true"), r.why);
  }
  d->all.add(d->general);
  for (Group g : kGroups) d->all.add(d->groups.at(g));
  d->all.add(d->reference);
  return d;
}

std::vector<std::string> normalise_command_line(const std::vector<std::string>& args) {
  std::vector<std::string> out;
  for (const std::string& a : args) {
    if (a.rfind("--", 0) == 0 && a.size() > 2) {
      const size_t eq = a.find('=');
      const std::string name = a.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
      out.push_back("--" + canonical_name(name) + (eq == std::string::npos ? "" : a.substr(eq)));
    } else {
      out.push_back(a);
    }
  }
  return out;
}

// Maps file keys to option names ([model] width -> model_width, [any] key -> key, aliases) and rejects
// keys that name no option, all of them in one message.
void canonicalise_file_keys(po::parsed_options& parsed, const po::options_description& desc,
                            const std::string& file) {
  std::vector<std::string> unknown;
  for (po::option& opt : parsed.options) {
    std::string key = opt.string_key;
    const size_t dot = key.find('.');
    if (dot != std::string::npos) {
      const std::string section = key.substr(0, dot);
      key = key.substr(dot + 1);
      if (section == "model" && key.rfind("model_", 0) != 0 && !aliases().count(canonical_name(key))) {
        key = "model_" + key;
      }
    }
    key = canonical_name(key);
    if (key == "config") throw InputError("config file '" + file + "': 'config' cannot be set inside a config file");
    if (key == "help" || key == "version" || desc.find_nothrow(key, false) == nullptr) {
      unknown.push_back(opt.string_key);
      continue;
    }
    opt.string_key = key;
    opt.unregistered = false;
  }
  if (!unknown.empty()) {
    std::string list;
    for (const auto& k : unknown) list += (list.empty() ? "'" : ", '") + k + "'" + suggestion(desc, k);
    throw InputError("config file '" + file + "': unknown key(s) " + list + " (see --help for the option names)");
  }
}

void store_ini(std::istream& in, const po::options_description& desc, const std::string& file, po::variables_map& vm) {
  try {
    po::parsed_options parsed = po::parse_config_file(in, desc, /*allow_unregistered=*/true);
    canonicalise_file_keys(parsed, desc, file);
    po::store(parsed, vm);
  } catch (const po::error& e) {
    throw InputError("config file '" + file + "': " + e.what());
  }
}

// Boost's default style completes an unambiguous prefix (--learning-rat = --learning_rate); a typo must be
// an error instead, so only whole names (and the listed aliases) are accepted.
constexpr int kCommandLineStyle = po::command_line_style::default_style & ~po::command_line_style::allow_guessing;

}  // namespace

std::string version_string() { return "openvid " OPENVID_VERSION; }


const char* to_string(Precision p) { return choice_word(p); }
DeviceRequest parse_device(const std::string& option, const std::string& word) { return parse_choice<DeviceRequest>(option, word); }
Precision parse_precision(const std::string& option, const std::string& word, const std::string& tool) {
  const Precision p = parse_choice<Precision>(option, word);
  if (p == Precision::kFp8) {
    throw InputError("--" + option + " fp8 is for training (openvid_mpi); " + tool +
                     " computes in bf16 or fp32 (a checkpoint trained in fp8 holds ordinary fp32 weights): use --" + option + " bf16");
  }
  return p;
}
const char* to_string(LrSchedule s) { return choice_word(s); }
const char* to_string(RopeLayout layout) { return choice_word(layout); }

void parse_tool_command_line(const po::options_description& desc, int argc, char** argv, po::variables_map& vm) {
  try {
    po::store(po::command_line_parser(argc, argv).options(desc).style(kCommandLineStyle).run(), vm);
    if (!vm.count("help")) po::notify(vm);
  } catch (const po::error& e) {
    throw InputError(command_line_error(desc, e));
  }
}

ParsedCommandLine parse_command_line(const std::vector<std::string>& args) {
  ParsedCommandLine result;
  Options& o = result.options;
  const auto desc = describe(o);
  po::variables_map vm;
  try {
    // Words that are no option's value are collected (not silently ignored) to be named in the error.
    po::options_description with_stray;
    with_stray.add(desc->all).add_options()("stray-words", po::value<std::vector<std::string>>());
    po::positional_options_description positional;
    positional.add("stray-words", -1);
    po::store(po::command_line_parser(normalise_command_line(args)).options(with_stray).positional(positional).style(kCommandLineStyle).run(),
             vm);
  } catch (const po::error& e) {
    throw InputError(command_line_error(desc->all, e));
  }
  if (vm.count("stray-words")) {
    std::string words;
    for (const auto& w : vm["stray-words"].as<std::vector<std::string>>()) words += (words.empty() ? "'" : ", '") + w + "'";
    throw InputError("unexpected word(s) " + words + " on the command line: every setting is an option, e.g. --dataset PATH (see --help)");
  }
  if (vm.count("help")) {
    result.action = ParsedCommandLine::Action::kHelp;
    return result;
  }
  if (vm.count("version")) {
    result.action = ParsedCommandLine::Action::kVersion;
    return result;
  }
  if (vm.count("config")) {
    const std::string file = vm["config"].as<std::string>();
    std::ifstream in(file);
    if (!in) throw InputError("config file '" + file + "' cannot be opened (check the --config path)");
    store_ini(in, desc->all, file, vm);  // values already set by the command line are kept
  }
  try {
    po::notify(vm);
  } catch (const po::error& e) {
    throw InputError(std::string(e.what()) + " (see --help)");
  }
  validate(o);
  if (o.emulate_world > 0) {  // a measurement: what needs the whole job's model or files is off
    result.notes.push_back("note: --emulate_world " + std::to_string(o.emulate_world) + ": this process trains as rank 0 of a job of " +
                           std::to_string(o.emulate_world) + " ranks; its collectives are stand-ins timed by the network model, so "
                           "the weights are not the job's: they stay at their initial values (the optimizer runs with a learning rate "
                           "of 0), and evaluation, samples and checkpoints are off");
    o.evaluate_every = 0;
    o.sample_every = 0;
    o.write_checkpoints = false;
  }
  for (const ReferenceOnly& r : kReferenceOnly) {
    if (vm.count(r.name)) result.notes.push_back(std::string("note: --") + r.name + " is ignored: " + r.why);
  }
  return result;
}

std::string help_text(const std::string& program) {
  Options defaults;
  const auto desc = describe(defaults);
  std::ostringstream os;
  os << "Usage: mpirun -np N " << program << " [--config FILE.ini] [options]\n\n"
     << "Trains a text-to-video diffusion transformer (rectified flow) over dp x fs x cp MPI ranks.\n"
     << "Options take '-' or '_' alike (--eval-every = --evaluate_every). Booleans: --flag, --flag=false.\n"
     << "INI files hold the same names as 'key = value'; in a [model] section the model_ prefix is implied.\n"
     << "Exit codes: 0 done, 1 runtime failure (job aborted), 2 bad options/config/input, 3 checkpointed on\n"
     << "SIGUSR1/SIGTERM (requeue and resume with --resume auto).\n\n"
     << desc->all;
  return os.str();
}

Options options_from_ini(const std::string& ini_text, const std::string& source) {
  Options o;
  const auto desc = describe(o);
  po::variables_map vm;
  std::istringstream in(ini_text);
  store_ini(in, desc->all, source, vm);
  try {
    po::notify(vm);
  } catch (const po::error& e) {
    throw InputError("config file '" + source + "': " + e.what());
  }
  return o;
}

std::string to_ini(const Options& options) {
  Options o = options;
  std::ostringstream os;
  os << "# " << version_string() << " options (read back with --config)\n";
  Group current = Group::kParallel;
  bool first = true;
  for_each_option(o, [&](const char* name, auto& field, const char*, Group g) {
    if (first || g != current) os << "\n# " << group_title(g) << "\n";
    first = false;
    current = g;
    os << name << " = " << to_text(field) << "\n";
  });
  return os.str();
}

}  // namespace ov

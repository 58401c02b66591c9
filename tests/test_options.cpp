#define BOOST_TEST_MODULE options
#include <boost/test/unit_test.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "openvid/config/options.h"
#include "openvid/runtime/error.h"

namespace {

ov::Options parse(const std::vector<std::string>& args) { return ov::parse_command_line(args).options; }

// The message of the InputError that parsing `args` throws ("" if none).
std::string error_of(const std::vector<std::string>& args) {
  try {
    parse(args);
  } catch (const ov::InputError& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

struct TempFile {
  explicit TempFile(const std::string& text) {
    path = (std::filesystem::temp_directory_path() /
            ("openvid_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + ".ini"))
               .string();
    std::ofstream(path) << text;
  }
  ~TempFile() { std::remove(path.c_str()); }
  std::string path;
  static inline int counter = 0;
};

}  // namespace

BOOST_AUTO_TEST_CASE(defaults_match_the_reference_trainer) {
  const ov::Options o = parse({});
  BOOST_CHECK_EQUAL(o.fs, 1);
  BOOST_CHECK_EQUAL(o.cp, 1);
  BOOST_CHECK_EQUAL(o.num_epochs, 2);
  BOOST_CHECK_EQUAL(o.batch_size, 64);
  BOOST_CHECK_EQUAL(o.learning_rate, 1e-4);
  BOOST_CHECK_EQUAL(o.max_steps, 10000);
  BOOST_CHECK_EQUAL(o.evaluate_every, 20);
  BOOST_CHECK_EQUAL(o.run_name, "diffusion_repa");
  BOOST_CHECK_EQUAL(o.model.width, 512);
  BOOST_CHECK_EQUAL(o.model.depth, 9);
  BOOST_CHECK_EQUAL(o.model.head_dim, 128);
  BOOST_CHECK(o.optimizer_type == ov::OptimizerType::kMupAdam);
  BOOST_CHECK(o.lr_scheduler_type == ov::LrSchedule::kCosine);
  BOOST_CHECK_EQUAL(o.model.bias_and_norm_affine, false);
  BOOST_CHECK_EQUAL(o.model.init_std_factor, 0.1);
  BOOST_CHECK_EQUAL(o.load_checkpoint, "");
  BOOST_CHECK_EQUAL(o.profile_dir, "");
  BOOST_CHECK_EQUAL(o.log_every, 10);
  BOOST_CHECK_EQUAL(o.eval_batches, 9);
  BOOST_CHECK_EQUAL(o.grad_clip, 0.0);
  BOOST_CHECK_EQUAL(o.adam_beta1, 0.95);
  BOOST_CHECK_EQUAL(o.adam_beta2, 0.99);
  BOOST_CHECK_EQUAL(o.timestep_shift, 8.0);
  BOOST_CHECK_EQUAL(o.caption_dropout, 0.01);
}

BOOST_AUTO_TEST_CASE(command_line_sets_values_with_either_spelling) {
  const ov::Options o = parse({"--fs", "2", "--cp=4", "--batch-size", "3", "--learning_rate", "3e-4",
                               "--eval-every", "500", "--model-width", "1024", "--lr_scheduler_type", "linear",
                               "--train_bias_and_rms", "--run_name", "small"});
  BOOST_CHECK_EQUAL(o.fs, 2);
  BOOST_CHECK_EQUAL(o.cp, 4);
  BOOST_CHECK_EQUAL(o.batch_size, 3);
  BOOST_CHECK_EQUAL(o.learning_rate, 3e-4);
  BOOST_CHECK_EQUAL(o.evaluate_every, 500);
  BOOST_CHECK_EQUAL(o.model.width, 1024);
  BOOST_CHECK(o.lr_scheduler_type == ov::LrSchedule::kLinear);
  BOOST_CHECK_EQUAL(o.model.bias_and_norm_affine, true);
  BOOST_CHECK_EQUAL(o.run_name, "small");
  BOOST_CHECK_EQUAL(parse({"--train_bias_and_rms=false"}).model.bias_and_norm_affine, false);
  BOOST_CHECK_EQUAL(parse({"--bias-and-norm-affine=1"}).model.bias_and_norm_affine, true);
}

BOOST_AUTO_TEST_CASE(help_and_version_are_actions) {
  BOOST_CHECK(ov::parse_command_line({"--help"}).action == ov::ParsedCommandLine::Action::kHelp);
  BOOST_CHECK(ov::parse_command_line({"-h"}).action == ov::ParsedCommandLine::Action::kHelp);
  BOOST_CHECK(ov::parse_command_line({"--version"}).action == ov::ParsedCommandLine::Action::kVersion);
}

BOOST_AUTO_TEST_CASE(help_lists_every_option) {
  const std::string help = ov::help_text("openvid_mpi");
  std::istringstream ini(ov::to_ini(ov::Options{}));
  int seen = 0;
  for (std::string line; std::getline(ini, line);) {
    if (line.empty() || line[0] == '#') continue;
    const std::string name = line.substr(0, line.find(' '));
    BOOST_CHECK_MESSAGE(contains(help, "--" + name), "--help does not mention --" + name);
    ++seen;
  }
  BOOST_CHECK_GT(seen, 40);
  BOOST_CHECK(contains(help, "--config"));
}

BOOST_AUTO_TEST_CASE(config_file_with_sections_and_command_line_override) {
  TempFile file(
      "# a run\n"
      "batch_size = 8\n"
      "[parallel]\n"
      "fs = 2\n"
      "cp = 2\n"
      "[model]\n"
      "width = 256\n"
      "depth = 4\n"
      "head_dim = 64\n"
      "bias_and_norm_affine = true\n"
      "rope_layout = seed\n"
      "[optim]\n"
      "learning-rate = 0.001\n");
  const ov::Options o = parse({"--config", file.path, "--fs", "4", "--model_depth=6"});
  BOOST_CHECK_EQUAL(o.batch_size, 8);
  BOOST_CHECK_EQUAL(o.fs, 4);  // command line wins
  BOOST_CHECK_EQUAL(o.cp, 2);
  BOOST_CHECK_EQUAL(o.model.width, 256);
  BOOST_CHECK_EQUAL(o.model.depth, 6);  // command line wins
  BOOST_CHECK_EQUAL(o.model.head_dim, 64);
  BOOST_CHECK_EQUAL(o.model.bias_and_norm_affine, true);
  BOOST_CHECK(o.model.rope_layout == ov::RopeLayout::kSeed);
  BOOST_CHECK_EQUAL(o.learning_rate, 1e-3);
  BOOST_CHECK_EQUAL(o.config_file, file.path);
}

BOOST_AUTO_TEST_CASE(to_ini_reads_back_to_the_same_options) {
  ov::Options o = parse({"--fs", "2", "--learning_rate", "0.00031", "--dataset", "/data/set.h5",
                         "--model_rope_layout", "seed", "--seed", "1234567890123", "--recompute_every", "2"});
  const std::string ini = ov::to_ini(o);
  TempFile file(ini);
  const ov::Options back = parse({"--config", file.path});
  std::string text = ov::to_ini(back);
  BOOST_CHECK_EQUAL(text, ini);
  BOOST_CHECK_EQUAL(back.learning_rate, 0.00031);
  BOOST_CHECK_EQUAL(back.seed, 1234567890123);
  BOOST_CHECK_EQUAL(back.dataset, "/data/set.h5");
  BOOST_CHECK_EQUAL(back.model.recompute_every, 2);
}

BOOST_AUTO_TEST_CASE(unknown_and_malformed_options_give_one_clear_line) {
  std::string e = error_of({"--bogus", "1"});
  BOOST_CHECK_MESSAGE(contains(e, "bogus") && contains(e, "--help"), e);
  e = error_of({"--fs", "two"});
  BOOST_CHECK_MESSAGE(contains(e, "fs") && contains(e, "two"), e);
  e = error_of({"--fs"});
  BOOST_CHECK_MESSAGE(contains(e, "fs"), e);
  e = error_of({"stray"});
  BOOST_CHECK_MESSAGE(contains(e, "'stray'"), "a positional argument must be rejected by name: " + e);
  BOOST_CHECK(e.find('\n') == std::string::npos);
  e = error_of({"--fs", "2", "run.ini"});  // a word after an option's value is named too
  BOOST_CHECK_MESSAGE(contains(e, "'run.ini'") && contains(e, "--dataset PATH"), e);
}

// A typo gets the near option name; a word like no option gets none.
BOOST_AUTO_TEST_CASE(unknown_options_get_the_near_name) {
  std::string e = error_of({"--learning-rat", "1e-3"});
  BOOST_CHECK_MESSAGE(contains(e, "unrecognised option '--learning_rat' (did you mean --learning_rate?) (see --help)"), e);
  e = error_of({"--evalute_every", "5"});
  BOOST_CHECK_MESSAGE(contains(e, "(did you mean --evaluate_every?)"), e);
  e = error_of({"--precison", "bf16"});
  BOOST_CHECK_MESSAGE(contains(e, "(did you mean --precision?)"), e);
  e = error_of({"--bogus", "1"});
  BOOST_CHECK_MESSAGE(!contains(e, "did you mean"), e);
  // Keys of a config file too.
  try {
    ov::options_from_ini("lerning_rate = 0.1\n", "run.ini");
    e = "";
  } catch (const ov::InputError& error) {
    e = error.what();
  }
  BOOST_CHECK_MESSAGE(contains(e, "unknown key(s) 'lerning_rate' (did you mean --learning_rate?)"), e);
}

BOOST_AUTO_TEST_CASE(abbreviations_are_rejected_and_aliases_are_listed) {
  // Boost's default would complete these prefixes to --learning_rate and --model_depth.
  std::string e = error_of({"--learning-rat", "1e-3"});
  BOOST_CHECK_MESSAGE(contains(e, "learning_rat") && contains(e, "--help"), e);
  e = error_of({"--model_d", "4"});
  BOOST_CHECK_MESSAGE(contains(e, "model_d"), e);
  BOOST_CHECK_EQUAL(parse({"--lr", "0.002"}).learning_rate, 0.002);  // an alias is a whole name
  std::string help;  // the help text with its line wrapping undone
  std::istringstream words(ov::help_text("openvid_mpi"));
  for (std::string w; words >> w;) help += w + " ";
  for (const char* alias : {"(also --lr)", "(also --eval_every)", "(also --lr_schedule)", "(also --bias_and_norm_affine, --model_bias_and_norm_affine)",
                            "(also --model_recompute_every)"}) {
    BOOST_CHECK_MESSAGE(contains(help, alias), std::string("--help does not list ") + alias);
  }
}

// The reference trainer's own command lines run: its options without a counterpart are accepted, each
// with one note, and listed in --help.
BOOST_AUTO_TEST_CASE(reference_only_options_are_accepted_with_a_note) {
  const ov::ParsedCommandLine cl =
      ov::parse_command_line({"--compile-strat", "per_block", "--project_name", "video", "--return_index", "--fs", "2"});
  BOOST_CHECK_EQUAL(cl.options.fs, 2);
  BOOST_REQUIRE_EQUAL(cl.notes.size(), 3u);
  BOOST_CHECK(contains(cl.notes[0], "--compile_strat is ignored"));
  BOOST_CHECK(ov::parse_command_line({"--fs", "2"}).notes.empty());
  BOOST_CHECK(contains(ov::help_text("openvid_mpi"), "--return_index"));
}

// The configurations shipped in config/ (the README launches them) parse and validate.
BOOST_AUTO_TEST_CASE(shipped_configurations_are_valid) {
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(OPENVID_CONFIG_DIR)) {
    if (entry.path().extension() != ".ini") continue;
    BOOST_CHECK_MESSAGE(error_of({"--config", entry.path().string()}).empty(), entry.path().string() + ": " + error_of({"--config", entry.path().string()}));
    ++files;
  }
  BOOST_CHECK_GE(files, 2);
}

BOOST_AUTO_TEST_CASE(config_file_errors_name_the_file) {
  std::string e = error_of({"--config", "/nonexistent/run.ini"});
  BOOST_CHECK_MESSAGE(contains(e, "/nonexistent/run.ini") && contains(e, "cannot be opened"), e);
  TempFile unknown("fs = 2\nnot_an_option = 3\n[model]\nwidht = 5\n");
  e = error_of({"--config", unknown.path});
  BOOST_CHECK_MESSAGE(contains(e, unknown.path) && contains(e, "not_an_option") && contains(e, "model.widht"), e);
  TempFile bad_value("batch_size = many\n");
  e = error_of({"--config", bad_value.path});
  BOOST_CHECK_MESSAGE(contains(e, bad_value.path) && contains(e, "many"), e);
  TempFile nested("config = other.ini\n");
  e = error_of({"--config", nested.path});
  BOOST_CHECK_MESSAGE(contains(e, "config"), e);
}

BOOST_AUTO_TEST_CASE(validation_names_the_option_and_the_fix) {
  const struct {
    std::vector<std::string> args;
    std::string expect;
  } cases[] = {
      {{"--fs", "0"}, "--fs must be >= 1"},
      {{"--cp", "-1"}, "--cp must be >= 1"},
      {{"--batch_size", "0"}, "--batch_size"},
      {{"--batch_size", "6", "--grad_accum", "4"}, "--grad_accum must divide --batch_size 6"},
      {{"--model_width", "500"}, "--model_width must be a multiple of --model_head_dim 128"},
      {{"--model_head_dim", "12", "--model_width", "24"}, "--model_head_dim must be a positive multiple of 8"},
      {{"--lr_scheduler_type", "step"}, "--lr_scheduler_type must be one of linear, cosine, constant"},
      {{"--optimizer_type", "sgd"}, "--optimizer_type"},
      {{"--model_rope_layout", "random"}, "--model_rope_layout"},
      {{"--backend", "gloo"}, "--backend must be one of auto, mpi, nccl"},
      {{"--learning_rate", "0"}, "--learning_rate must be > 0"},
      {{"--adam_beta2", "1"}, "--adam_beta2"},
      {{"--caption_dropout", "1.5"}, "--caption_dropout"},
      {{"--warmup_steps", "10", "--max_steps", "5"}, "--warmup_steps"},
      {{"--run_name", "a/b"}, "--run_name"},
      {{"--collective_timeout", "0"}, "--collective_timeout"},
  };
  for (const auto& c : cases) {
    const std::string e = error_of(c.args);
    BOOST_CHECK_MESSAGE(contains(e, c.expect), "expected '" + c.expect + "', got '" + e + "'");
  }
}

// `segicl model info|export|memory|decoder`: presets with parameter counts and FLOPs; fp16 export
// for shipping; the exemplar memory shipped beside a model; the decoder ablation of a
// paper-architecture checkpoint.
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "common.h"
#include "segicl/core/error.h"
#include "segicl/data/exemplar_memory.h"
#include "segicl/data/pack.h"
#include "segicl/eval/decoder_ablation.h"
#include "segicl/models/checkpoint.h"
#include "segicl/models/config.h"

namespace segicl::cli {
namespace {

void print_info(const models::ModelConfig& config, const std::string& name) {
  if (config.is_crossconv()) {
    std::string widths;
    for (auto w : config.crossconv_encoder) widths += (widths.empty() ? "" : ",") + std::to_string(w);
    std::printf("%-8s crossconv R=%lld  grid %lld (patch %lld)  encoder %s  text %s  k<=%lld  params %.2f M\n",
                name.c_str(), static_cast<long long>(config.resolution),
                static_cast<long long>(config.resolution / config.crossconv_patch),
                static_cast<long long>(config.crossconv_patch), widths.c_str(), config.crossconv_text ? "on" : "off",
                static_cast<long long>(config.max_context()), models::count_parameters(config) / 1e6);
  } else {
    std::printf("%-8s R=%lld  T=%lld tokens/query  n=%lld tokens/example  k<=%lld  params %.2f M\n", name.c_str(),
                static_cast<long long>(config.resolution), static_cast<long long>(config.num_condition_tokens),
                static_cast<long long>(config.tokens_per_example), static_cast<long long>(config.max_context()),
                models::count_parameters(config) / 1e6);
  }
  for (const auto& [part, count] : models::count_parameters_by_part(config))
    std::printf("           %-18s %12.3f M\n", part.c_str(), count / 1e6);
  for (int k : {0, 1, 3, 8}) {
    if (config.is_crossconv())
      std::printf("           GFLOPs/query (estimate) k=%d: %.2f\n", k, models::flops_per_query(config, k, 0) / 1e9);
    else
      std::printf("           GFLOPs/query (estimate) k=%d, 4 DDIM steps: %.2f\n", k,
                  models::flops_per_query(config, k, 4) / 1e9);
  }
}

}  // namespace

void register_model(CLI::App& app, GlobalOptions& global) {
  auto* cmd = app.add_subcommand("model", "Inspect presets and checkpoints; export for shipping");
  cmd->require_subcommand(1);
  auto* info = cmd->add_subcommand("info", "Parameter counts and FLOPs per query of presets or a checkpoint\n  e.g. segicl model info --preset tiny,cpu,gpu,paper");
  static std::string presets = "tiny,cpu,gpu,paper,universeg,crossconv-cpu", checkpoint;
  info->add_option("--preset", presets, "Comma-separated preset names")->capture_default_str();
  info->add_option("--checkpoint", checkpoint, "A checkpoint to describe instead");
  info->callback([&global] {
    start(global);
    if (!checkpoint.empty()) {
      auto meta = models::read_checkpoint_meta(checkpoint);
      print_info(models::ModelConfig::from_json(meta["config"], checkpoint), "checkpoint");
      std::printf("stage %d, step %lld, weights %s, created %s\n", meta.value("stage", 0),
                  static_cast<long long>(meta.value("step", 0)), meta.value("weights_dtype", "?").c_str(),
                  meta.value("created", "?").c_str());
      return;
    }
    for (const auto& name : split_list(presets)) print_info(models::load_preset(name), name);
  });
  auto* exp = cmd->add_subcommand("export", "Write a weights-only checkpoint (fp16 by default) for shipping\n  e.g. segicl model export runs/s2/best.pt models/segicl-cpu.pt");
  static std::string in, out;
  static bool fp32 = false;
  exp->add_option("input", in, "Checkpoint")->required();
  exp->add_option("output", out, "Output checkpoint")->required();
  exp->add_flag("--fp32", fp32, "Keep fp32 weights");
  exp->callback([&global] {
    start(global);
    auto loaded = models::load_checkpoint(in);
    auto meta = loaded.meta;
    meta.erase("format");
    meta["exported_from"] = std::filesystem::path(in).filename().string();
    models::SaveOptions so;
    so.half = !fp32;
    models::save_checkpoint(out, *loaded.model, meta, so);
    std::printf("%s -> %s (%.1f MiB)\n", in.c_str(), out.c_str(), std::filesystem::file_size(out) / 1048576.0);
  });

  auto* mix = cmd->add_subcommand(
      "interpolate",
      "Write a checkpoint between a model and its continuation: (1 - t) * A + t * B, weight by weight\n"
      "  e.g. segicl model interpolate models/segicl-crossconv.pt models/segicl-crossconv-gpu.pt -t 0.5 -o mix.pt");
  static std::string mix_a, mix_b, mix_out;
  static double mix_t = 0.5;
  static bool mix_force = false;
  mix->add_option("a", mix_a, "Checkpoint A (t = 0)")->required();
  mix->add_option("b", mix_b, "Checkpoint B (t = 1), same architecture")->required();
  mix->add_option("-t", mix_t, "Share of B")->check(CLI::Range(0.0, 1.0))->capture_default_str();
  mix->add_option("-o,--out", mix_out, "Output checkpoint (fp16)")->required();
  mix->add_flag("--force", mix_force, "Overwrite an existing output");
  mix->callback([&global] {
    start(global);
    if (std::filesystem::exists(mix_out) && !mix_force)
      SEGICL_THROW(UsageError, "output exists", mix_out, "pass --force to overwrite it");
    auto a = models::load_checkpoint(mix_a);
    auto b = models::load_checkpoint(mix_b);
    models::interpolate_weights(*a.model, *b.model, mix_t, mix_a, mix_b);
    auto meta = a.meta;
    meta.erase("format");
    meta.erase("created");
    meta["interpolated"] = {{"a", mix_a}, {"b", mix_b}, {"t", mix_t}, {"b_step", b.meta.value("step", 0)}};
    models::SaveOptions so;
    so.half = true;
    models::save_checkpoint(mix_out, *a.model, meta, so);
    std::printf("(1 - %.2f) x %s + %.2f x %s -> %s (%.1f MiB)\n", mix_t, mix_a.c_str(), mix_t, mix_b.c_str(),
                mix_out.c_str(), std::filesystem::file_size(mix_out) / 1048576.0);
  });

  auto* mem = cmd->add_subcommand(
      "memory",
      "Build the exemplar memory a model recalls for text-only requests, from a train pack\n"
      "  e.g. segicl model memory --pack runs/train128.pack -o models/segicl-crossconv.memory");
  static std::string pack_path, memory_out;
  static data::MemoryOptions memory_options;
  static bool memory_force = false;
  mem->add_option("--pack", pack_path, "Train pack (`segicl pack --purpose train`)")->required();
  mem->add_option("-o,--out", memory_out, "Output memory file (MODEL.memory is found beside MODEL.pt)")->required();
  mem->add_option("--groups-per-task", memory_options.groups_per_task, "Patients kept per task")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  mem->add_option("--slices-per-group", memory_options.slices_per_group, "Slices per patient, spread over the structure")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  mem->add_flag("--force", memory_force, "Overwrite an existing output");
  mem->callback([&global] {
    start(global);
    if (std::filesystem::exists(memory_out) && !memory_force)
      SEGICL_THROW(UsageError, "output exists", memory_out, "pass --force to overwrite it");
    auto pack = data::Pack::open(pack_path);
    const int64_t bytes = data::ExemplarMemory::build(*pack, memory_out, memory_options);
    auto memory = data::ExemplarMemory::open(memory_out);
    std::printf("%s: %lld slices, %zu structures, %.2f MiB\n", memory_out.c_str(),
                static_cast<long long>(memory->pack().num_slices()), memory->structures().size(), bytes / 1048576.0);
  });

  auto* dec = cmd->add_subcommand(
      "decoder",
      "Decoder ablation of a paper-architecture checkpoint: true masks -> condition tokens -> DDIM -> mask,\n"
      "  at several step counts, with and without the query-image hint (Dice and time per slice)\n"
      "  e.g. segicl model decoder models/segicl-cpu.pt --pack runs/val128.pack -o reports/ablation_decoder");
  static std::string decoder_checkpoint, decoder_pack, decoder_out, decoder_steps = "1,4,10,25", decoder_hints = "on,off";
  static eval::DecoderAblationOptions decoder_options;
  dec->add_option("checkpoint", decoder_checkpoint, "Paper-architecture checkpoint")->required();
  dec->add_option("--pack", decoder_pack, "Pack whose positive slices are decoded (val or eval)")->required();
  dec->add_option("--steps", decoder_steps, "Comma-separated DDIM step counts")->capture_default_str();
  dec->add_option("--hints", decoder_hints, "on and/or off: query image given to the decoder")->capture_default_str();
  dec->add_option("--slices", decoder_options.slices, "Positive slices decoded (seeded choice)")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  dec->add_option("--batch", decoder_options.batch, "Slices per decoder call")->check(CLI::Range(1, 4096))->capture_default_str();
  dec->add_option("--seed", decoder_options.seed, "Slice choice and diffusion noise")->capture_default_str();
  dec->add_option("-o,--out", decoder_out, "Report folder (metrics.json, report.md)")->required();
  dec->callback([&global] {
    start(global);
    decoder_options.ddim_steps = split_ints(decoder_steps, "--steps", "e.g. --steps 1,4,10,25");
    decoder_options.hints.clear();
    for (const auto& h : split_list(decoder_hints)) {
      if (h != "on" && h != "off") SEGICL_THROW(UsageError, "--hints takes on and/or off, got '" + h + "'", "", "");
      decoder_options.hints.push_back(h == "on");
    }
    auto loaded = models::load_checkpoint(decoder_checkpoint);
    auto pack = data::Pack::open(decoder_pack);
    auto result = eval::run_decoder_ablation(*loaded.model, *pack, decoder_options);
    result.options["model"] = decoder_checkpoint;
    result.options["pack"] = decoder_pack;
    std::cout << eval::write_decoder_report(result, decoder_out);
  });
}

}  // namespace segicl::cli

r"""QLoRA on a Llama-2-7B-shaped model: plain TRL+PEFT+bitsandbytes with padding vs our settings (GPU).

What it measures (H100/H200 class): a model with Llama-2-7B's published architecture (hidden 4096,
intermediate 11008, 32 layers, 32 heads, vocab 32000, 4096 positions, RMS-norm eps 1e-5), built from its
config with random weights (no download), saved once in bf16 to `--cache-dir` and loaded back through the
real QLoRA path: `from_pretrained(folder, quantization_config=BitsAndBytesConfig(4-bit NF4, double quant,
bf16 compute))`. LoRA r=64, alpha=16, dropout 0.05 on all linear layers, batch 8, max length 1024, one epoch
over the same synthetic examples in both runs, completion-only loss, AdamW (`adamw_torch`: the paged
bitsandbytes optimizers keep their state in CUDA managed memory, which max_memory_allocated does not see
and which the device machine's notes advise against near a full card):

- baseline, "plain TRL+PEFT+bitsandbytes with padding": no packing, the default collator padding each batch
  to its longest example, eager attention, no gradient checkpointing;
- ours: best-fit-decreasing packing, padding-free (`packing_strategy="bfd"`), gradient checkpointing
  (non-reentrant), SDPA attention (flash_attention_2 where `flash_attn` imports), Liger kernels
  (`use_liger_kernel=True`) where `liger_kernel` imports, else the output says so.

Each run is a child process of its own (fresh model load, fresh CUDA context, peak memory stats reset
before training; Liger patches transformers' Llama module globally, which a separate process keeps out of
the baseline). The first `--warmup-steps` optimizer steps are left out of the timing; the timed window runs
from the start of the first timed step to the end of the last (torch.cuda.synchronize at both ends), data
loading and optimizer steps included. Should the baseline run out of GPU memory at batch 8 (eager attention
without checkpointing on a 1024-token batch needs more than an H100 holds), it is run again with the
micro-batch halved and gradient accumulation doubled (effective batch 8 kept, still padded) and the report
says so; peak memory is then the smaller micro-batch's. Should ours fail with Liger on, it is run again
without Liger and the report says so.

Figures per run: optimizer steps, real tokens (non-padding tokens: the attention mask's ones, or every
token of a padding-free batch), wall seconds, real tokens/s, padded fraction of the token slots, peak GPU
memory (torch.cuda.max_memory_allocated), and MFU = 6 * N * real tokens/s / peak bf16 FLOP/s, N = 6.74e9,
every parameter of the bf16 model; `--peak-tflops` (default 989, H100/H200 SXM dense bf16). Model FLOPs
only: gradient checkpointing's recomputation and attention are not counted, and the frozen 4-bit weights
need no weight gradients, so 6N is the convention rather than the work done. Goal (issue): ours >= 1.6x
the baseline's real tokens/s and <= 0.6x its peak memory.

Data: `--examples` (512) prompt-completion examples of random token ids (no tokenizer download; a
WordLevel tokenizer over the same 32000 ids gives TRL its pad/eos tokens) with a fixed seed. Total length
per example: lognormal, median 192 tokens, sigma 0.75, clipped to [24, 1024] (about mean 250, p90 500,
p99 950, 1% at 1024: mostly short Q&A with a long tail); the completion takes a uniform 20-60% of it and
only the completion is in the loss (`completion_mask`, `completion_only_loss=True`). `--smoke` scales the
lengths to its `--max-length`.

Run on the GPU machine (torch, transformers and peft are there, trl, bitsandbytes, datasets and two of
datasets' needs are not). Here, in the repo root, once (about 57 MiB of wheels; `/.whl/` is in
.git/info/exclude; bitsandbytes needs the manylinux_2_24 tag; transformers and peft are carried too so the
versions match constraints.txt):

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d .whl trl==1.16.0 bitsandbytes==0.50.2 datasets==5.2.0 \
      dill==0.4.1 multiprocess==0.70.19 transformers==5.23.0 peft==0.21.2 liger-kernel==0.8.5

then through the device tool, carrying `.whl` (about 5-8 minutes: 13.5 GB of random weights written once,
4-bit loads, trainings; each baseline retry after an OOM costs a load; `--baseline-micro-batch 4` starts
lower, `--examples 256` halves the training if the 10-minute limit is near):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/*.whl && export PYTHONPATH=/tmp/site && PYTHONUNBUFFERED=1 python3 bench/gpu_qlora.py \
      --markdown $OUT/gpu_qlora.md; cp docs/benchmarks.md docqa/data/throughputs.json $OUT/

It writes its section of docs/benchmarks.md (GPU, versions and the command included), both runs' real
tokens/s to docqa/data/throughputs.json (what `docqa estimate` reads for GPU training) and, with `--markdown`,
the section alone; all come back through $OUT. datasets 5.2 asks for pyarrow >= 24: the
report lists the pyarrow it found.

A quick check of the whole path on any machine (tiny Llama, a few examples, 4-bit where bitsandbytes
manages, the GPU where there is one, no peak memory or MFU on CPU; prints the markdown, writes nothing):

    python bench/gpu_qlora.py --smoke
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import command_line, record_figures, write_section

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LLAMA2_7B = {
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
}
SMOKE = {
    **LLAMA2_7B,
    "hidden_size": 128,
    "intermediate_size": 344,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 1024,
}
PACKAGES = ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "datasets", "pyarrow")
OPTIONAL = ("liger-kernel", "flash-attn", "triton")
MEDIAN, SIGMA, SHORTEST, SHARE = 192, 0.75, 24, (0.2, 0.6)


def parameter_count(shape: dict) -> int:
    """Every parameter of LlamaForCausalLM with this shape (untied embeddings, no biases)."""
    h, inter, vocab = shape["hidden_size"], shape["intermediate_size"], shape["vocab_size"]
    kv = h * shape["num_key_value_heads"] // shape["num_attention_heads"]
    layer = 2 * h * h + 2 * h * kv + 3 * h * inter + 2 * h
    return 2 * vocab * h + shape["num_hidden_layers"] * layer + h


def settings(args: argparse.Namespace) -> dict:
    """The resolved sizes: the GPU benchmark's, or --smoke's tiny ones."""
    return {
        "shape": SMOKE if args.smoke else LLAMA2_7B,
        "examples": args.examples or (48 if args.smoke else 512),
        "max_length": args.max_length or (256 if args.smoke else 1024),
        "warmup": args.warmup_steps if args.warmup_steps is not None else (1 if args.smoke else 2),
        "folder": Path(args.cache_dir) / ("llama-smoke-random" if args.smoke else "llama2-7b-random"),
    }


def synthetic_examples(n: int, max_length: int, vocab: int, seed: int) -> dict[str, list[list[int]]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    scale = max_length / 1024
    shortest = max(8, round(SHORTEST * scale))
    lengths = np.clip(np.rint(rng.lognormal(math.log(MEDIAN * scale), SIGMA, n)), shortest, max_length)
    input_ids, completion_mask = [], []
    for length in lengths.astype(int):
        completion = max(4, round(length * rng.uniform(*SHARE)))
        body = rng.integers(3, vocab, length - 2).tolist()
        input_ids.append([1, *body, 2])  # <s> ... </s>
        completion_mask.append([0] * (length - completion) + [1] * completion)
    return {"input_ids": input_ids, "completion_mask": completion_mask}


def length_stats(data: dict, max_length: int) -> dict:
    import numpy as np

    lengths = np.array([len(ids) for ids in data["input_ids"]])
    return {
        "tokens": int(lengths.sum()),
        "loss_tokens": int(sum(sum(mask) for mask in data["completion_mask"])),
        "mean": float(lengths.mean()),
        "median": float(np.median(lengths)),
        "p90": float(np.percentile(lengths, 90)),
        "p99": float(np.percentile(lengths, 99)),
        "max": int(lengths.max()),
        "at_cap": float((lengths >= max_length).mean()),
    }


def tiny_tokenizer(vocab_size: int):
    """A WordLevel tokenizer over ids 0..vocab-1: <unk>=0 (also pad), <s>=1, </s>=2, as in Llama-2."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"t{i}": i for i in range(3, vocab_size)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<unk>"
    )


def llama_config(shape: dict):
    from transformers import LlamaConfig

    return LlamaConfig(
        **shape,
        hidden_act="silu",
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        rope_theta=10000.0,
    )


def prepare(args: argparse.Namespace) -> dict:
    """Random bf16 weights of the configured shape, saved once (on the GPU where there is one: fast init)."""
    import torch
    from transformers import LlamaForCausalLM

    resolved = settings(args)
    folder = resolved["folder"]
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = LlamaForCausalLM(llama_config(resolved["shape"]))
    finally:
        torch.set_default_dtype(previous)
    model.save_pretrained(folder)
    tiny_tokenizer(resolved["shape"]["vocab_size"]).save_pretrained(folder)
    (folder / "COMPLETE").write_text(str(sum(p.numel() for p in model.parameters())))
    return {"seconds": time.perf_counter() - started}


def train(args: argparse.Namespace, name: str) -> dict:
    """One run (baseline or ours) in this process: load 4-bit, wrap LoRA, train one epoch, time it."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, TrainerCallback
    from transformers.utils import is_flash_attn_2_available
    from trl import SFTConfig, SFTTrainer

    resolved = settings(args)
    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    ours = name == "ours"
    if not ours:
        attn = "eager"
    elif args.ours_attn != "auto":
        attn = args.ours_attn
    else:
        attn = "flash_attention_2" if cuda and is_flash_attn_2_available() else "sdpa"
    if not ours:
        liger = "off (baseline)"
    elif args.no_liger:
        liger = "off (--no-liger)"
    elif not cuda:
        liger = "off (no GPU: Liger's kernels are Triton)"
    elif importlib.util.find_spec("liger_kernel") is None:
        liger = "off (liger_kernel does not import)"
    else:
        liger = "on"

    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    load = {"dtype": torch.bfloat16, "attn_implementation": attn}
    if cuda:
        load["device_map"] = {"": 0}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            resolved["folder"], quantization_config=quantization, **load
        )
        quantized = "4-bit NF4, double quant, bf16 compute"
    except Exception as error:  # bitsandbytes without a GPU backend: say so, train the bf16 model
        if cuda:
            raise
        print(f"4-bit load failed on CPU ({type(error).__name__}: {error}); bf16 weights instead", flush=True)
        model = AutoModelForCausalLM.from_pretrained(resolved["folder"], **load)
        quantized = f"none (4-bit failed on CPU: {type(error).__name__})"
    loaded_gib = torch.cuda.memory_allocated() / 2**30 if cuda else None

    data = synthetic_examples(
        resolved["examples"], resolved["max_length"], resolved["shape"]["vocab_size"], args.seed
    )
    micro = args.batch_size if ours else (args.baseline_micro_batch or args.batch_size)
    accumulation = args.batch_size // micro
    config = SFTConfig(
        output_dir=tempfile.mkdtemp(prefix=f"gpu-qlora-{name}-"),
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=accumulation,
        num_train_epochs=1,
        max_length=resolved["max_length"],
        learning_rate=2e-4,
        lr_scheduler_type="constant",
        optim=args.optim,
        bf16=True,
        use_cpu=not cuda,
        completion_only_loss=True,
        packing=ours,
        packing_strategy="bfd",
        gradient_checkpointing=ours,
        gradient_checkpointing_kwargs={"use_reentrant": False} if ours else None,
        use_liger_kernel=liger == "on",
        logging_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=args.seed,
        data_seed=args.seed,
    )
    lora = LoraConfig(
        r=args.rank,
        lora_alpha=args.alpha,
        lora_dropout=0.05,
        target_modules="all-linear",
        bias="none",
        task_type="CAUSAL_LM",
    )
    counts: dict[int, list] = {}

    class CountingTrainer(SFTTrainer):
        def training_step(self, model, inputs, *rest, **kwargs):
            ids = inputs["input_ids"]
            real = inputs["attention_mask"].sum() if "attention_mask" in inputs else ids.numel()
            widest = ids.shape[-1] if "attention_mask" in inputs else None
            counts.setdefault(self.state.global_step, []).append((real, ids.numel(), widest))
            return super().training_step(model, inputs, *rest, **kwargs)

    class Timer(TrainerCallback):
        start = end = None

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == resolved["warmup"]:
                sync()
                Timer.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == state.max_steps:
                sync()
                Timer.end = time.perf_counter()

    trainer = CountingTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_dict(data),
        processing_class=tiny_tokenizer(resolved["shape"]["vocab_size"]),
        peft_config=lora,
        callbacks=[Timer()],
    )
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    result = {
        "name": name,
        "attn": attn,
        "liger": liger,
        "quantized": quantized,
        "micro_batch": micro,
        "accumulation": accumulation,
        "trainable": trainable,
        "loaded_gib": loaded_gib,
        "device": torch.cuda.get_device_name() if cuda else "CPU",
        "cuda": torch.version.cuda,
    }
    try:
        metrics = trainer.train().metrics
        shutil.rmtree(config.output_dir, ignore_errors=True)
    except (torch.OutOfMemoryError, RuntimeError) as error:  # bitsandbytes may raise a plain RuntimeError
        if not isinstance(error, torch.OutOfMemoryError) and "out of memory" not in str(error).lower():
            raise
        steps = trainer.state.global_step
        widest = max((c[2] or 0 for c in counts.get(steps, [])), default=0)
        return {
            **result,
            "error": f"out of GPU memory at optimizer step {steps + 1} (widest micro-batch {widest} tokens, "
            f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB allocated at peak)",
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        }
    if Timer.start is None or Timer.end is None:
        raise SystemExit(
            f"{name}: {trainer.state.global_step} steps, not more than --warmup-steps; add --examples"
        )
    timed = [c for step, batch in counts.items() if step >= resolved["warmup"] for c in batch]
    every = [c for batch in counts.values() for c in batch]
    real = sum(int(r) for r, _, _ in timed)
    slots = sum(s for _, s, _ in timed)
    seconds = Timer.end - Timer.start
    return {
        **result,
        "steps": trainer.state.global_step,
        "timed_steps": trainer.state.global_step - resolved["warmup"],
        "real_tokens": real,
        "all_real_tokens": sum(int(r) for r, _, _ in every),
        "pad_fraction": 1 - real / slots,
        "seconds": seconds,
        "tokens_per_s": real / seconds,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "train_loss": metrics.get("train_loss"),
    }


def child(args: argparse.Namespace, stage: str, extra: list[str] = ()) -> dict:
    """Run one stage in a fresh Python process (own CUDA context, own peak memory, own monkey-patches)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = Path(handle.name)
    command = [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:], *extra, "--stage", stage]
    print(f"== {stage} {' '.join(extra)}".rstrip(), flush=True)
    code = subprocess.run([*command, "--result", str(out)]).returncode
    text = out.read_text() if out.exists() else ""
    out.unlink(missing_ok=True)
    if code != 0 or not text:
        return {"name": stage, "error": f"the {stage} process failed (exit {code}); its output is above"}
    return json.loads(text)


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES + OPTIONAL:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def driver() -> str:
    try:
        query = ["nvidia-smi", "--query-gpu=driver_version,memory.total", "--format=csv,noheader"]
        return (
            subprocess.run(query, capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
        )
    except (OSError, IndexError, subprocess.SubprocessError):
        return "n/a"


def gib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def row(run: dict, label: str, params: int, peak_tflops: float) -> str:
    if "error" in run:
        return f"| {label} | {run['error']} | | | | | | {gib(run.get('peak_gib'))} | |"
    mfu = "n/a"
    if run["peak_gib"] is not None:
        mfu = f"{6 * params * run['tokens_per_s'] / (peak_tflops * 1e12):.1%}"
    cells = [
        label,
        f"{run['timed_steps']} of {run['steps']}",
        f"{run['real_tokens']:,}",
        f"{run['seconds']:.1f}",
        f"{run['tokens_per_s']:,.0f}",
        f"{run['pad_fraction']:.1%}",
        gib(run["peak_gib"]),
        mfu,
        f"{run['train_loss']:.3f}",
    ]
    return "| " + " | ".join(cells) + " |"


def describe(run: dict, ours: bool) -> str:
    batch = f"batch {run.get('micro_batch', '?')}"
    if run.get("accumulation", 1) > 1:
        batch = f"micro-batch {run['micro_batch']} x {run['accumulation']} accumulation"
    if ours:
        liger = f"Liger {run.get('liger')}"
        return f"bfd packing, padding-free, grad. checkpointing, {run.get('attn')}, {liger}, {batch}"
    return f"no packing, padded to longest, {run.get('attn')}, no checkpointing, {batch}"


def goal(ratio: float, met: bool, target: str) -> str:
    return f"**{ratio:.2f}x** (goal {target}: {'met' if met else 'not met'})"


def report(args: argparse.Namespace, runs: dict, notes: list[str], stats: dict) -> str:
    resolved = settings(args)
    shape = resolved["shape"]
    params = parameter_count(shape)
    base, ours = runs["baseline"], runs["ours"]
    model = "Tiny smoke-test Llama" if args.smoke else "Llama-2-7B architecture"
    quantized = ours.get("quantized") or base.get("quantized", "?")
    trainable = base.get("trainable") or ours.get("trainable") or 0
    lines = [
        "## QLoRA on a Llama-2-7B-shaped model: plain TRL vs our settings (`bench/gpu_qlora.py`)\n",
        f"{model} (hidden {shape['hidden_size']}, {shape['num_hidden_layers']} layers, "
        f"{shape['num_attention_heads']} heads, vocab {shape['vocab_size']}; {params / 1e9:.2f}B params), "
        f"random weights, loaded with {quantized} quantization; LoRA r={args.rank} alpha={args.alpha} on all "
        f"linear layers ({trainable / 1e6:.1f}M trainable); batch {args.batch_size}, max length "
        f"{resolved['max_length']}, one epoch over {resolved['examples']} synthetic prompt-completion "
        f"examples (lengths mean {stats['mean']:.0f}, median {stats['median']:.0f}, p90 {stats['p90']:.0f}, "
        f"p99 {stats['p99']:.0f}, max {stats['max']}, {stats['at_cap']:.1%} at the cap; "
        f"{stats['tokens']:,} tokens, {stats['loss_tokens']:,} in the loss), completion-only loss. "
        f"Optimizer steps not timed (warm-up) per run: {resolved['warmup']}. "
        "Goal: ours >= 1.6x the baseline's real tokens/s and <= 0.6x its peak memory.\n",
        "| run | optimizer steps timed | real tokens timed | wall s | real tokens/s | padding | peak GiB "
        "| MFU | train loss |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        row(base, f"baseline: {describe(base, False)}", params, args.peak_tflops),
        row(ours, f"ours: {describe(ours, True)}", params, args.peak_tflops),
        "",
    ]
    if "error" in base or "error" in ours:
        lines.append("Ratios: n/a (a run did not finish).")
    else:
        speed = ours["tokens_per_s"] / base["tokens_per_s"]
        verdict = f"Real tokens/s, ours/baseline: {goal(speed, speed >= 1.6, '>= 1.6x')}; peak memory: "
        if base["peak_gib"] and ours["peak_gib"]:
            memory = ours["peak_gib"] / base["peak_gib"]
            verdict += goal(memory, memory <= 0.6, "<= 0.6x") + "."
        else:
            verdict += "n/a (no GPU)."
        lines.append(verdict)
        if base["all_real_tokens"] != ours["all_real_tokens"]:
            notes.append(
                f"Real tokens over the whole epoch differ: baseline {base['all_real_tokens']:,}, "
                f"ours {ours['all_real_tokens']:,}."
            )
    lines.append("")
    lines += [f"- {note}" for note in notes]
    command = shlex.join(["python", "bench/gpu_qlora.py", *sys.argv[1:]])
    if os.environ.get("PYTHONPATH"):
        command = f"PYTHONPATH={os.environ['PYTHONPATH']} {command}"
    device = ours.get("device") or base.get("device", "?")
    found = ", ".join(f"{name} {version}" for name, version in versions().items())
    lines += [
        f"- MFU = 6 x {params / 1e9:.2f}B parameters x real tokens/s / {args.peak_tflops:g} TFLOP/s "
        "(`--peak-tflops`, dense bf16 peak); model FLOPs only (no recomputation, no attention term; "
        "the frozen 4-bit weights get no weight gradients, so 6N is the convention, not the work done).",
        "- Padding: share of the timed batches' token slots that held padding. Peak: "
        "`torch.cuda.max_memory_allocated` during training (weights, adapter, optimizer, activations).",
        f"- Model after the 4-bit load: {gib(base.get('loaded_gib'))} GiB allocated (before the adapter).",
        f"- GPU: {device}; CUDA {base.get('cuda') or ours.get('cuda')}; driver, memory: {driver()}.",
        f"- Versions: {found}.",
        f"- Command: `{command}`",
    ]
    return "\n".join(lines)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--examples", type=int, help="synthetic examples, one epoch (default 512; --smoke 48)"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, help="default 1024; --smoke 256")
    parser.add_argument(
        "--warmup-steps", type=int, help="optimizer steps left out of timing (default 2; --smoke 1)"
    )
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--alpha", type=int, default=16)
    parser.add_argument(
        "--peak-tflops", type=float, default=989.0, help="dense bf16 peak for MFU (H100/H200 SXM)"
    )
    parser.add_argument(
        "--cache-dir", default=os.environ.get("TMPDIR", "/tmp"), help="where the random weights live"
    )
    parser.add_argument("--optim", default="adamw_torch", help="a transformers optimizer name")
    parser.add_argument(
        "--ours-attn", default="auto", choices=["auto", "sdpa", "flash_attention_2", "flex_attention"]
    )
    parser.add_argument("--no-liger", action="store_true", help="ours without Liger kernels")
    parser.add_argument(
        "--no-fallback", action="store_true", help="no smaller micro-batch for a baseline OOM"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny model, few examples; prints, writes nothing"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stage", choices=["prepare", "baseline", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument(
        "--baseline-micro-batch",
        type=int,
        help="start the baseline at this micro-batch (accumulating to --batch-size)",
    )
    parser.add_argument(
        "--markdown", help="also write the section's markdown to this file (e.g. $OUT/gpu_qlora.md)"
    )
    return parser.parse_args()


def main() -> None:
    args = parse()
    if args.stage:
        result = prepare(args) if args.stage == "prepare" else train(args, args.stage)
        Path(args.result).write_text(json.dumps(result))
        return
    resolved = settings(args)
    notes: list[str] = []
    if (resolved["folder"] / "COMPLETE").exists():
        notes.append(f"Random weights reused from {resolved['folder']}.")
    else:
        made = child(args, "prepare")
        if "error" in made:
            raise SystemExit(made["error"])
        notes.append(f"Random weights made and saved to {resolved['folder']} in {made['seconds']:.0f} s.")
    runs = {"baseline": child(args, "baseline")}
    micro = args.baseline_micro_batch or args.batch_size
    while "memory" in runs["baseline"].get("error", "") and not args.no_fallback and micro > 1:
        micro //= 2
        notes.append(
            f"Baseline at micro-batch {micro * 2}: {runs['baseline']['error']}; run again at {micro}."
        )
        runs["baseline"] = child(args, "baseline", ["--baseline-micro-batch", str(micro)])
    runs["ours"] = child(args, "ours")
    liger = importlib.util.find_spec("liger_kernel") is not None and not args.no_liger
    if liger and "error" in runs["ours"] and "memory" not in runs["ours"]["error"]:
        notes.append(f"Ours with Liger on: {runs['ours']['error']}; run again without Liger.")
        runs["ours"] = child(args, "ours", ["--no-liger"])
    stats = length_stats(
        synthetic_examples(
            resolved["examples"], resolved["max_length"], resolved["shape"]["vocab_size"], args.seed
        ),
        resolved["max_length"],
    )
    body = report(args, runs, notes, stats)
    print(body)
    if args.markdown:
        Path(args.markdown).write_text(body + "\n")
    if not args.smoke:
        try:
            write_section("gpu_qlora", body)
        except OSError as error:  # bench.report runs git, which a bare machine may lack
            print(f"docs/benchmarks.md not written: {error}", file=sys.stderr)
        measured = figures(args, runs)
        if measured:  # the device is named, so that no git is needed
            device = next(iter(measured.values()))["device"]
            record_figures("gpu_qlora", command_line("bench/gpu_qlora.py"), measured, device=device)


def figures(args: argparse.Namespace, runs: dict) -> dict[str, dict]:
    """Each finished run's real tokens/s, for `docqa estimate` (docqa/data/throughputs.json)."""
    resolved = settings(args)
    found = {}
    for name, run in runs.items():
        if "error" in run:
            continue
        ours = name == "ours"
        found[f"train.gpu.llama-2-7b-shape.{name}"] = {
            "stage": "train",
            "metric": "tokens_per_s",
            "value": round(run["tokens_per_s"], 1),
            "device_kind": "cpu" if run["device"] == "CPU" else "gpu",
            "device": f"{run['device']}, CUDA {run['cuda']}",
            "model": f"Llama-2-7B architecture, random weights, {run['quantized']}",
            "parameters": parameter_count(resolved["shape"]),
            "conditions": {
                "packing": ours,
                "gradient_checkpointing": ours,
                "attn": run["attn"],
                "liger": run["liger"],
                "max_length": resolved["max_length"],
                "batch_size": args.batch_size,
                "micro_batch": run["micro_batch"],
                "lora_rank": args.rank,
                "padding": round(run["pad_fraction"], 3),
                "peak_gib": None if run["peak_gib"] is None else round(run["peak_gib"], 1),
            },
            "note": "QLoRA training, real (non-padding) tokens per second after the warm-up steps",
        }
    return found


if __name__ == "__main__":
    main()

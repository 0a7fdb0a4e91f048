"""What every entry point does around a recipe: check the workdir, record the run's provenance,
warn when a resumed run's config changed, and exit on preemption with a status a scheduler can
tell from a crash (`train.EXIT_PREEMPTED`, 75)."""
import json
import os
import re
import sys

from r1jax import provenance, train


def prepare_workdir(config, workdir: str, argv: list[str]) -> None:
    """Creates `workdir` (one clear error line if it is a file), writes `provenance.json` (resolved
    config, code and package versions) and warns, naming the fields, when a run resumed in it had
    another config (the earlier record is kept as provenance.previous.json)."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        sys.exit(f"error: --workdir {workdir!r} is a file; give a folder (it is created if "
                 "missing)")
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "provenance.json")
    record = provenance.describe(json.loads(config.to_json_best_effort()), argv, __file__)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        changes = provenance.config_changes(old.get("config", {}), record["config"])
        if changes:
            print(f"warning: resuming in {workdir} with a changed config:\n  "
                  + "\n  ".join(changes), file=sys.stderr)
        os.replace(path, os.path.join(workdir, "provenance.previous.json"))
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
    os.replace(path + ".tmp", path)


def run_or_exit(fn, *args, **kwargs):
    """fn(*args, **kwargs); on preemption prints the one-line message and exits with
    train.EXIT_PREEMPTED."""
    try:
        return fn(*args, **kwargs)
    except train.Preempted as e:
        print(str(e), file=sys.stderr, flush=True)
        sys.exit(train.EXIT_PREEMPTED)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, but a bad --config override (a misspelt field, a value of the wrong
    type) ends the program with one line naming it instead of a traceback. Pass as
    `app.run(main, flags_parser=run_setup.parse_flags)`."""
    from absl import flags
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        sys.exit(f"error: {e}\nPass --helpfull to see the flags.")
    except (AttributeError, KeyError, ValueError, TypeError) as e:
        msg = str(e.args[0]) if e.args else str(e)
        msg = " ".join(msg.replace("\\n", " ").replace("\\'", "'").replace("'", "").split())
        bad = [a for a in argv[1:] if a.startswith("--config.")]
        sys.exit(f"error: bad config override {' '.join(bad)}: {msg}")


def log_phases() -> None:
    """Prints the library's phase lines ("pretrain: resuming at step 600 of 800 from ...",
    "evaluation of the base model: reusing ...") on stderr, prefixed with "r1jax: "."""
    import logging
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("r1jax: %(message)s"))
    logger = logging.getLogger("r1jax")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # absl's root handler would print it again


CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def configs_overview(configs_dir: str = CONFIGS) -> str:
    """For --help: each config file's variants (the indented lines of its docstring's
    "Variants" block) and its sections of fields (each field is commented in the file)."""
    import importlib.util
    lines = ["Configs (--config configs/FILE.py:VARIANT; override any field with "
             "--config.SECTION.FIELD=VALUE):"]
    for name in sorted(n for n in os.listdir(configs_dir) if n.endswith(".py")):
        spec = importlib.util.spec_from_file_location(name[:-3], os.path.join(configs_dir, name))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        doc = (module.__doc__ or "").splitlines()
        start = next((i for i, l in enumerate(doc) if l.startswith("Variants")), None)
        variants = []
        for line in doc[start + 1:] if start is not None else []:
            if not line.startswith("  "):
                break
            variants.append(line)
        fields = module.get_config()
        sections = [f"{k}.*" if hasattr(v, "keys") else k for k, v in fields.items()]
        title = re.split(r"(?<! al)\. ", " ".join(doc[:doc.index("")] if "" in doc else doc))[0]
        scripts = [f"experiments/{n}" for n in sorted(os.listdir(os.path.dirname(__file__)))
                   if n.endswith(".py") and f"configs/{name}:" in _read(n)]
        runner = f"run by {', '.join(scripts)}" if scripts else "nested in another config"
        lines += ["", f"configs/{name} ({runner}): {title}", *variants,
                  f"  fields: {', '.join(sections)} (each commented in configs/{name})"]
    return "\n".join(lines)


def _read(script: str) -> str:
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), script),
              encoding="utf-8") as f:
        return f.read()


def define_config_flags(example: str):
    """The --config and --workdir flags of an entry point (both required); returns them. Its
    --help also lists every config with its variants and fields."""
    from absl import flags
    main = sys.modules["__main__"]
    main.__doc__ = (main.__doc__ or "") + "\n" + configs_overview()
    from ml_collections import config_flags
    config = config_flags.DEFINE_config_file("config", None, f"Config file, e.g. {example}",
                                             lock_config=True)
    workdir = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and plots go.")
    flags.mark_flags_as_required(["config", "workdir"])
    return config, workdir


def run_recipe(name: str, config, workdir: str) -> dict:
    """Runs `r1jax.recipes.<name>.run(config, workdir)` as an entry point does: the config
    checked (`check_config`), provenance, exit status 75 on preemption, then the recipe's
    results table."""
    import importlib
    from absl import logging
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
    log_phases()
    recipe = importlib.import_module(f"r1jax.recipes.{name}")
    try:  # a bad value: one line naming its field, before the workdir is touched
        recipe.check_config(config)
    except ValueError as e:
        sys.exit(f"error: {e}")
    prepare_workdir(config, workdir, sys.argv)
    results = run_or_exit(recipe.run, config, workdir)
    print(recipe.results_table(results))
    print(f"results: {os.path.join(workdir, 'results.json')}")
    return results

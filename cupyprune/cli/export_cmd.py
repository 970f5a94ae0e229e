"""`cupyprune export`: a PyTorch model (torchvision name, Hugging Face folder, or any importable
factory) to a model file, verified against PyTorch before it is kept."""
import click


from .common import check_writable, one_line_errors


def _shape(text):
    try:
        dims = [int(d) for d in text.split(",")]
    except ValueError:
        dims = []
    if not dims or any(d < 1 for d in dims):
        raise click.BadParameter(f"{text!r}: expected positive integers such as 1,3,224,224")
    return dims


@click.command(name="export")
@click.option("--torchvision", "tv_name", metavar="NAME",
              help="A torchvision classification builder by name (resnet50, mobilenet_v2, ...).")
@click.option("--hf", "hf_dir", metavar="DIR", type=click.Path(),
              help="A Hugging Face save_pretrained folder (config.json + model.safetensors).")
@click.option("--module", "factory", metavar="PKG.MOD:FACTORY",
              help="Any importable function returning an nn.Module (needs --input-shape).")
@click.option("--checkpoint", type=click.Path(), metavar="CKPT",
              help="A state dict (.safetensors, or .pt read with weights_only) for the model.")
@click.option("--input-shape", metavar="N,C,H,W", help="Example input shape for --module.")
@click.option("--image-size", type=click.IntRange(min=1), help="torchvision: image size "
              "(default: the builder's own, 224 for most).")
@click.option("--num-classes", type=click.IntRange(min=1), help="torchvision: classes of the "
              "checkpoint's classifier (default: the builder's, 1000).")
@click.option("--prune", "prune", metavar="PATTERN", help="Prune before exporting (magnitude): "
              "element, group, vector[:N:M] or block[:RxC]; every conv and linear but the stem "
              "and the classifier.")
@click.option("--keep", type=click.FloatRange(min=0, max=1, min_open=True), default=0.5,
              show_default=True, help="With --prune: the kept fraction of each layer.")
@click.option("--pattern", metavar="PATTERN", help="Declare this pattern (group, element, "
              "vector, block) for every masked weight; it is checked at load.")
@click.option("--out", "out", required=True, type=click.Path(), metavar="M.safetensors",
              help="The model file to write.")
@click.option("--no-verify", is_flag=True, help="Skip running the written file against PyTorch.")
@click.option("--tolerance", type=click.FloatRange(min=0), default=1e-4, show_default=True,
              help="Largest max-relative error of the verification that keeps the file.")
@one_line_errors
def export_cmd(tv_name, hf_dir, factory, checkpoint, input_shape, image_size, num_classes,
               prune, keep, pattern, out, no_verify, tolerance):
    """Export a PyTorch model to a cupyprune model file.

    Exactly one of --torchvision, --hf or --module names the model. Pruned weights are taken
    from torch.nn.utils.prune masks (a checkpoint saved with weight_orig/weight_mask) or from
    the zeros of the weights. The written file is run with NumPy on a random example input and
    compared with PyTorch; above --tolerance nothing is written.
    """
    chosen = [o for o, v in (("--torchvision", tv_name), ("--hf", hf_dir),
                             ("--module", factory)) if v]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --torchvision NAME, --hf DIR, --module "
                               "PKG.MOD:FACTORY")
    if hf_dir and checkpoint:
        raise click.UsageError("--hf reads the folder's own model.safetensors: drop --checkpoint")
    if not out.endswith(".safetensors"):
        raise click.UsageError(f"--out {out!r}: the model file's name must end in .safetensors")
    check_writable(out, option="--out")
    from ..export import export_module, prune_module
    from ..export.sources import hf_source, module_source, torchvision_source

    def report(text):
        click.echo(text, err=True)

    if tv_name:
        source = torchvision_source(tv_name, checkpoint, image_size, num_classes)
    elif hf_dir:
        source = hf_source(hf_dir)
    else:
        source = module_source(factory, checkpoint, _shape(input_shape) if input_shape else None)
    if prune:
        report(f"pruning with {prune}, keeping {keep:g} of each layer")
        prune_module(source.module, prune, keep)
    error = export_module(source.module, source.example_inputs, out, labels=source.labels,
                          pattern=pattern, verify=not no_verify, tolerance=tolerance,
                          exporter=source.exporter, max_length=source.max_length,
                          normalization=source.normalization, report=report)
    click.echo(f"wrote {out}" + ("" if error is None else f" (max relative error {error:.1e})"))




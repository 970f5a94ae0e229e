"""A torch-based equivalent of `cupyprune serve` for comparisons (start-up time, install size):
the same Open Inference Protocol endpoints and codec (cupyprune.serve.protocol, which imports no
torch) on Starlette and uvicorn, running a PyTorch module, one request at a time (no batching).

    python tools/torch_serve.py --arch resnet18 --variant imagenet --name resnet18 --port 8001 \\
        [--checkpoint ckpt.pt] [--device cuda] [--fp16]
    python tools/torch_serve.py --arch bert --config bert.json --name bert --port 8001
    python tools/serve_startup.py resnet18.safetensors --model resnet18 \\
        --command "python tools/torch_serve.py --arch resnet18 --variant imagenet \\
                   --name resnet18 --port {port}" --out startup-torch.json

Inputs are named as in cupyprune's files (image; pixel_values; input_ids, token_type_ids,
attention_mask), so one request serves both. Without --checkpoint the module keeps its fresh
initialisation (start-up then leaves out reading the weights).
"""
import asyncio
import os
import sys
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from oneline import OneLineParser, parse_or_exit, positive_int  # noqa: E402

CNN_ARCHS = ("resnet18", "vgg16", "vgg16_bn")


def parse_args(argv):
    ap = OneLineParser(prog="tools/torch_serve.py", description=__doc__.split("\n")[0])
    ap.add_argument("--arch", required=True, choices=CNN_ARCHS + ("vit", "bert"))
    ap.add_argument("--variant", default="imagenet", choices=("imagenet", "cifar"))
    ap.add_argument("--num-classes", type=positive_int, default=None)
    ap.add_argument("--config", help="vit/bert: the Hugging Face config.json")
    ap.add_argument("--checkpoint", help="a state dict (.pt) to load")
    ap.add_argument("--name", required=True, help="the model's name in the URL")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--device", default="cpu", help="torch device: cpu, cuda")
    ap.add_argument("--fp16", action="store_true", help="half precision (CUDA)")
    return ap.parse_args(argv)


def build_module(args):
    """-> (torch module in eval mode on its device, forward: inputs dict -> logits tensor)."""
    import torch
    if args.arch in CNN_ARCHS:
        from archs import build
        classes = args.num_classes or (1000 if args.variant == "imagenet" else 10)
        module, names = build(args.arch, classes, args.variant), ("image",)
    else:
        import transformers
        config = transformers.AutoConfig.from_pretrained(args.config) if args.config else (
            transformers.BertConfig() if args.arch == "bert" else transformers.ViTConfig())
        cls = (transformers.BertForSequenceClassification if args.arch == "bert"
               else transformers.ViTForImageClassification)
        module = cls(config)
        names = ("input_ids", "token_type_ids", "attention_mask") if args.arch == "bert" \
            else ("pixel_values",)
    if args.checkpoint:
        module.load_state_dict(torch.load(args.checkpoint, map_location="cpu"))
    module = module.eval().to(args.device)
    if args.fp16:
        module = module.half()

    @torch.inference_mode()
    def forward(arrays):
        tensors = {k: torch.from_numpy(v).to(args.device) for k, v in arrays.items()
                   if k in names}
        if args.fp16:
            tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
        if args.arch in CNN_ARCHS:
            out = module(tensors["image"])
        else:
            out = module(**tensors).logits
        return {"logits": out.float().cpu().numpy()}
    return forward


def build_app(name, forward):
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from cupyprune.errors import InputError
    from cupyprune.serve.protocol import HEADER_LENGTH, decode_request, encode_response
    worker = ThreadPoolExecutor(1)              # the module runs one request at a time

    async def ready(request):
        return JSONResponse({"ready": True})

    async def infer(request):
        if request.path_params["name"] != name:
            return JSONResponse({"error": "unknown model"}, status_code=404)
        try:
            req = decode_request(await request.body(), request.headers.get(HEADER_LENGTH))
        except InputError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        outputs = await asyncio.get_running_loop().run_in_executor(worker, forward, req.inputs)
        content, headers = encode_response(name, req, outputs)
        return Response(content, headers=headers)

    return Starlette(routes=[Route("/v2/health/ready", ready),
                             Route("/v2/models/{name}/infer", infer, methods=["POST"])])


def main(argv=None):
    args = parse_or_exit(parse_args, argv)
    import uvicorn
    uvicorn.run(build_app(args.name, build_module(args)), host=args.host, port=args.port,
                log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())

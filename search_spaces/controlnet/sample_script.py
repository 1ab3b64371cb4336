"""Generate images that follow condition images, with this export bundle alone (torch + safetensors, no nasplat).

    python sample.py cond1.png cond2.png --out samples/          # inputs are condition (edge) maps
    python sample.py photo1.png --from-images --out samples/     # inputs are images: their edge maps condition
    python sample.py --demo 8 --out samples/                     # simple synthetic conditions (boxes, rings)

Inputs are 8-bit PNG (grey, grey+alpha, RGB or RGBA; not interlaced) or PGM files; they are converted to
grey and resized to the network's input size. For every input ``NAME`` the script writes ``NAME_cond.png``
(the condition used) and ``NAME_sample.png`` (the generated image), and ``grid.png`` with conditions on the
first row and samples on the second. Sampling is deterministic DDIM (``--steps``, ``--seed``).
"""

from __future__ import annotations

import argparse
import importlib.util
import struct
import zlib
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent


def load_bundle(bundle: Path) -> torch.nn.Module:
    spec = importlib.util.spec_from_file_location("bundle_loader", bundle / "load.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {bundle / 'load.py'}")
    loader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loader)
    model: torch.nn.Module = loader.load(bundle)
    return model


# --------------------------------------------------------------------------------------------------------------
# image files (stdlib only)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def read_png(path: Path) -> torch.Tensor:
    """An 8-bit, non-interlaced PNG as a float tensor (H, W) in [0, 1] (channel mean, alpha ignored)."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG file")
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    if header is None:
        raise ValueError(f"{path}: PNG without IHDR")
    width, height, depth, color, _, _, interlace = header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(color)
    if depth != 8 or channels is None or interlace:
        raise ValueError(
            f"{path}: only 8-bit, non-interlaced grey/RGB(A) PNGs are read (bit depth {depth}, colour {color})"
        )
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytearray] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                line[i] = (line[i] + _paeth(a, b, c)) & 0xFF
        rows.append(line)
        prev = line
    pixels = torch.tensor([list(r) for r in rows], dtype=torch.float32).view(height, width, channels) / 255.0
    colour = pixels[..., : 3 if channels >= 3 else 1]
    return colour.mean(dim=-1)


def read_pgm(path: Path) -> torch.Tensor:
    """A binary (P5) or text (P2) PGM as a float tensor (H, W) in [0, 1]."""
    data = path.read_bytes()
    tokens: list[bytes] = []
    pos = 0
    while len(tokens) < 4:
        while data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        end = pos
        while not data[end : end + 1].isspace():
            end += 1
        tokens.append(data[pos:end])
        pos = end
    magic, width, height, maxval = tokens[0], int(tokens[1]), int(tokens[2]), int(tokens[3])
    if magic == b"P5":
        body = data[pos + 1 : pos + 1 + width * height]
        values = list(body)
    elif magic == b"P2":
        values = [int(v) for v in data[pos:].split()[: width * height]]
    else:
        raise ValueError(f"{path}: not a PGM file")
    return torch.tensor(values, dtype=torch.float32).view(height, width) / float(maxval)


def write_png(path: Path, image: torch.Tensor) -> None:
    """Write a grey image (H, W) with values in [0, 1] as an 8-bit PNG."""
    img = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    height, width = img.shape
    rows = b"".join(b"\x00" + bytes(img[y].tolist()) for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")
    path.write_bytes(png)


def read_image(path: Path) -> torch.Tensor:
    return read_pgm(path) if path.suffix.lower() in (".pgm", ".pnm") else read_png(path)


def demo_conditions(n: int, height: int, width: int) -> torch.Tensor:
    """Synthetic condition maps: outlines of boxes and ellipses of varying size (B, 1, H, W)."""
    ys = torch.linspace(-1, 1, height).view(-1, 1)
    xs = torch.linspace(-1, 1, width).view(1, -1)
    out = []
    for i in range(n):
        s = 0.45 + 0.4 * (i % 4) / 3
        box = (xs.abs() <= s * 0.8) & (ys.abs() <= s)
        ellipse = (xs / (s * 0.8)) ** 2 + (ys / s) ** 2 <= 1
        inside = box if i % 2 == 0 else ellipse
        shape = inside.float()
        edge = (F.max_pool2d(shape[None, None], 3, 1, 1) - shape[None, None]).clamp(0, 1)
        out.append(edge[0])
    return torch.stack(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate images following condition images with this bundle.")
    parser.add_argument("inputs", nargs="*", type=Path, help="condition images (PNG or PGM)")
    parser.add_argument("--out", type=Path, default=Path("samples"))
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--from-images", action="store_true", help="inputs are images: condition on their edges")
    parser.add_argument("--demo", type=int, default=0, help="use N synthetic conditions instead of files")
    parser.add_argument("--bundle", type=Path, default=HERE)
    args = parser.parse_args(argv)

    model = load_bundle(args.bundle)
    cfg: dict[str, Any] = getattr(model, "nasplat_config")  # noqa: B009 - the bundle's model carries it
    c, height, width = (int(s) for s in cfg["input_shape"])
    if args.demo:
        conds = demo_conditions(args.demo, height, width)
        names = [f"demo_{i}" for i in range(args.demo)]
    elif args.inputs:
        images = []
        for path in args.inputs:
            img = read_image(path)[None, None]
            images.append(F.interpolate(img, size=(height, width), mode="bilinear", align_corners=False)[0])
        conds = torch.stack(images).clamp(0, 1)
        if args.from_images:
            conds = model.condition(conds.expand(-1, c, -1, -1))  # type: ignore[operator]
        names = [p.stem for p in args.inputs]
    else:
        parser.error("give condition images, or --demo N")
    samples = model.generate(conds, steps=args.steps, seed=args.seed)  # type: ignore[operator]
    args.out.mkdir(parents=True, exist_ok=True)
    for name, cond, sample in zip(names, conds, samples):
        write_png(args.out / f"{name}_cond.png", cond[0])
        write_png(args.out / f"{name}_sample.png", sample.mean(dim=0))
    grid = torch.cat([torch.cat(list(conds[:, 0]), dim=1), torch.cat(list(samples.mean(dim=1)), dim=1)], dim=0)
    write_png(args.out / "grid.png", grid)
    print(f"wrote {len(names)} samples to {args.out}")


if __name__ == "__main__":
    main()

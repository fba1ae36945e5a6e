#!/usr/bin/env python3
"""Is a PNG (as rsvg-convert renders OUT/loss.svg) a picture of the loss plot? Standard library only.

Decodes the PNG (zlib + the five scanline filters), then counts the pixels of each curve's colour (train loss
#1f77b4, held-out loss #d62728, learning rate #2ca02c, within an antialiasing tolerance) and the non-white ones.
Prints one line, "ok ..." (exit 0) when the image is not blank and all three curves are drawn, else "bad ...".

    python3 tests/check_png.py loss.png
"""
import struct, sys, zlib

def read_png(path):
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, w = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or ctype not in (2, 6) or interlace:
                raise ValueError("only 8-bit RGB/RGBA non-interlaced PNGs (depth %d, colour type %d)" % (depth, ctype))
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw, stride, rows, prev = zlib.decompress(idat), w * bpp, [], bytearray(w * bpp)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1: line[i] = (line[i] + a) & 255
            elif f == 2: line[i] = (line[i] + b) & 255
            elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(line)
        prev = line
    return w, h, bpp, rows

def main():
    w, h, bpp, rows = read_png(sys.argv[1])
    colours = {"train": (0x1f, 0x77, 0xb4), "held-out": (0xd6, 0x27, 0x28), "lr": (0x2c, 0xa0, 0x2c)}
    count = {k: 0 for k in colours}
    nonwhite = 0
    for row in rows:
        for x in range(w):
            r, g, b = row[x * bpp], row[x * bpp + 1], row[x * bpp + 2]
            if bpp == 4 and row[x * bpp + 3] < 128:
                continue
            if r < 240 or g < 240 or b < 240:
                nonwhite += 1
            for k, (cr, cg, cb) in colours.items():
                if abs(r - cr) < 40 and abs(g - cg) < 40 and abs(b - cb) < 40:
                    count[k] += 1
    ok = nonwhite > 0.01 * w * h and all(v >= 50 for v in count.values())
    print("%s %dx%d, %.1f%% non-white; pixels of train loss %d, held-out loss %d, learning rate %d" %
          ("ok" if ok else "bad", w, h, 100.0 * nonwhite / (w * h), count["train"], count["held-out"], count["lr"]))
    sys.exit(0 if ok else 1)

main()

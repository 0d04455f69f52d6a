#!/usr/bin/env python3
"""Writes the image seed corpora of the fuzz targets (fuzz/corpus/fuzz_{nifti,meta,image2d}): small
crops of the CHAOS sample volume in data/samples/ and tiny synthetic 2D images, a few KB each.
Deterministic. Not a fuzzer.
Needs Debian's python3-nibabel and python3-numpy, and (optional) cjpeg for the JPEG seed.
The pack, checkpoint, text and request seeds are described in fuzz/README.md.
Run from the repository root: /usr/bin/python3 fuzz/make_seeds.py"""
import gzip
import os
import subprocess
import zlib

import nibabel as nib
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
SAMPLES = os.path.join(ROOT, "data", "samples")


def out(target, name):
    folder = os.path.join(CORPUS, target)
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, name)


def crop():
    """A 12x10x3 crop of a CHAOS MR volume and its labels, with their affine."""
    image = nib.load(os.path.join(SAMPLES, "chaos_mr_t2", "images", "chaos_mr_t2_p01.nii.gz"))
    labels = nib.load(os.path.join(SAMPLES, "chaos_mr_t2", "labels", "chaos_mr_t2_p01.nii.gz"))
    lab = np.asanyarray(labels.dataobj)
    # Centre the crop on labelled voxels so the label seed is not all background.
    xs, ys, zs = np.nonzero(lab)
    x, y, z = int(np.median(xs)) - 6, int(np.median(ys)) - 5, int(np.median(zs)) - 1
    img = np.asanyarray(image.dataobj)[x:x + 12, y:y + 10, z:z + 3]
    return img, lab[x:x + 12, y:y + 10, z:z + 3], image.affine


def nifti_seeds():
    img, lab, affine = crop()
    nib.save(nib.Nifti1Image(img.astype(np.int16), affine), out("fuzz_nifti", "mr_int16.nii"))
    nib.save(nib.Nifti1Image(img.astype(np.float32), affine), out("fuzz_nifti", "mr_float32.nii.gz"))
    nib.save(nib.Nifti1Image(lab.astype(np.uint8), affine), out("fuzz_nifti", "labels_uint8.nii.gz"))
    nib.save(nib.Nifti2Image(img[:, :, :1].astype(np.float64), affine), out("fuzz_nifti", "mr_nifti2.nii"))
    rgb = np.zeros((4, 3, 1, 1, 3), np.uint8)
    rgb[..., 0] = 200
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), out("fuzz_nifti", "vector5d.nii"))
    return img, lab


def meta_seeds(img, lab):
    shape = img.shape  # x, y, z
    raw = img.astype(np.int16).transpose(2, 1, 0).tobytes()  # x fastest
    header = ("ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
              "CompressedData = {c}\n{size}TransformMatrix = 1 0 0 0 1 0 0 0 1\nOffset = -10 5.5 2\n"
              "ElementSpacing = 1.4 1.4 6\nDimSize = {x} {y} {z}\nElementType = MET_SHORT\n"
              "ElementDataFile = LOCAL\n")
    with open(out("fuzz_meta", "mr_short.mha"), "wb") as f:
        f.write(header.format(c="False", size="", x=shape[0], y=shape[1], z=shape[2]).encode() + raw)
    packed = zlib.compress(raw)
    with open(out("fuzz_meta", "mr_short_zlib.mha"), "wb") as f:
        f.write(header.format(c="True", size="CompressedDataSize = %d\n" % len(packed), x=shape[0],
                              y=shape[1], z=shape[2]).encode() + packed)
    labels = lab.astype(np.uint8).transpose(2, 1, 0).tobytes()
    nrrd = ("NRRD0004\ntype: unsigned char\ndimension: 3\nspace: left-posterior-superior\n"
            "sizes: {} {} {}\nspace directions: (1.4,0,0) (0,1.4,0) (0,0,6)\nkinds: domain domain domain\n"
            "endian: little\nencoding: {}\nspace origin: (-10,5.5,2)\n\n")
    with open(out("fuzz_meta", "labels_raw.nrrd"), "wb") as f:
        f.write(nrrd.format(*shape, "raw").encode() + labels)
    with open(out("fuzz_meta", "labels_gzip.nrrd"), "wb") as f:
        f.write(nrrd.format(*shape, "gzip").encode() + gzip.compress(labels, mtime=0))
    rgb = ("NRRD0004\ntype: float\ndimension: 3\nsizes: 3 4 2\nkinds: RGB-color domain domain\n"
           "endian: little\nencoding: raw\n\n")
    with open(out("fuzz_meta", "rgb_float.nrrd"), "wb") as f:
        f.write(rgb.encode() + np.linspace(0, 1, 24, dtype=np.float32).tobytes())


def png(path, pixels, color_type, bit_depth=8, palette=None):
    """Minimal PNG writer: pixels [H, W, C] (uint8 or >u2), filter 0 on every row."""
    height, width = pixels.shape[:2]
    rows = b"".join(b"\0" + pixels[y].tobytes() for y in range(height))

    def chunk(kind, data):
        return (len(data).to_bytes(4, "big") + kind + data +
                zlib.crc32(kind + data).to_bytes(4, "big"))
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([bit_depth, color_type, 0, 0, 0])
    body = chunk(b"IHDR", ihdr)
    if palette is not None:
        body += chunk(b"PLTE", palette)
    body += chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + body)


def bmp(path, grey):
    """8-bit palette BMP (bottom-up rows padded to 4 bytes)."""
    height, width = grey.shape
    stride = (width + 3) // 4 * 4
    rows = b"".join(grey[y].tobytes().ljust(stride, b"\0") for y in range(height - 1, -1, -1))
    palette = b"".join(bytes([i, i, i, 0]) for i in range(256))
    offset = 14 + 40 + len(palette)
    header = (b"BM" + (offset + len(rows)).to_bytes(4, "little") + b"\0\0\0\0" + offset.to_bytes(4, "little") +
              (40).to_bytes(4, "little") + width.to_bytes(4, "little") + height.to_bytes(4, "little") +
              (1).to_bytes(2, "little") + (8).to_bytes(2, "little") + bytes(24))
    with open(path, "wb") as f:
        f.write(header + palette + rows)


def tiff(path, pixels):
    """Uncompressed little-endian TIFF, grey (C == 1) or RGB (C == 3), one strip."""
    height, width, channels = pixels.shape
    data = pixels.tobytes()
    tags = [(256, 3, 1, width), (257, 3, 1, height), (258, 3, 1, 8), (259, 3, 1, 1),
            (262, 3, 1, 2 if channels == 3 else 1), (273, 4, 1, 0), (277, 3, 1, channels),
            (278, 3, 1, height), (279, 4, 1, len(data))]
    ifd_size = 2 + 12 * len(tags) + 4
    strip = 8 + ifd_size
    ifd = len(tags).to_bytes(2, "little")
    for tag, kind, count, value in tags:
        value = strip if tag == 273 else value
        ifd += (tag.to_bytes(2, "little") + kind.to_bytes(2, "little") + count.to_bytes(4, "little") +
                value.to_bytes(4, "little"))
    with open(path, "wb") as f:
        f.write(b"II*\0" + (8).to_bytes(4, "little") + ifd + bytes(4) + data)


def tiff_big_endian(path):
    """An 8x8 grey TIFF in Motorola byte order ("MM"), one strip."""
    pixels = bytes((x * 4 + y * 28) % 256 for y in range(8) for x in range(8))
    tags = [(256, 3, 1, 8), (257, 3, 1, 8), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
            (273, 4, 1, 0), (277, 3, 1, 1), (278, 3, 1, 8), (279, 4, 1, len(pixels))]
    strip = 8 + 2 + 12 * len(tags) + 4
    ifd = len(tags).to_bytes(2, "big")
    for tag, kind, count, value in tags:
        value = strip if tag == 273 else value
        field = value.to_bytes(2, "big") + bytes(2) if kind == 3 else value.to_bytes(4, "big")
        ifd += tag.to_bytes(2, "big") + kind.to_bytes(2, "big") + count.to_bytes(4, "big") + field
    with open(path, "wb") as f:
        f.write(b"MM\0*" + (8).to_bytes(4, "big") + ifd + bytes(4) + pixels)


def planar_seeds():
    """Synthetic ultrasound-like images (an ellipse on a gradient) and a label; the formats and
    pixel types the readers handle, each a few hundred bytes."""
    y, x = np.mgrid[0:24, 0:24]
    ellipse = ((x - 12) / 8.0) ** 2 + ((y - 11) / 6.0) ** 2 <= 1
    grey = (40 + 4 * x + 80 * ellipse).astype(np.uint8)
    png(out("fuzz_image2d", "us_grey.png"), grey[..., None], 0)
    png(out("fuzz_image2d", "us_rgb.png"), np.stack([grey, grey // 2, 255 - grey], -1)[:12, :12], 2)
    png(out("fuzz_image2d", "us_grey_alpha.png"), np.stack([grey, grey], -1)[:8, :8], 4)
    png(out("fuzz_image2d", "us_16bit.png"), (grey.astype(">u2") * 257)[:8, :8, None], 0, 16)
    png(out("fuzz_image2d", "label_palette.png"), ellipse.astype(np.uint8)[..., None], 3,
        palette=bytes([0, 0, 0, 255, 0, 0]))
    png(out("fuzz_image2d", "label_grey.png"), ellipse.astype(np.uint8)[..., None], 0)
    bmp(out("fuzz_image2d", "us.bmp"), grey[:8, :10])
    tiff(out("fuzz_image2d", "us_grey.tif"), grey[:8, :8, None])
    tiff(out("fuzz_image2d", "us_rgb.tif"), np.stack([grey, grey, grey], -1)[:6, :6])
    # TIFFs of another writer (Pillow, Debian python3-pil, which python3-matplotlib brings): the
    # layouts the directory checks of src/io/volume.cpp must let through.
    try:
        from PIL import Image
        ramp = (np.arange(64).reshape(8, 8) * 4).astype(np.uint8)
        Image.fromarray(ramp).save(out("fuzz_image2d", "us_grey_lzw.tif"), compression="tiff_lzw")
        Image.fromarray((np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)).save(
            out("fuzz_image2d", "us_16bit.tif"))
        pages = [Image.fromarray(((ramp + 10 * i) % 256).astype(np.uint8)) for i in range(3)]
        pages[0].save(out("fuzz_image2d", "us_pages.tif"), save_all=True, append_images=pages[1:])
        Image.fromarray(ramp).save(out("fuzz_image2d", "us_deflate_dpi.tif"),
                                   compression="tiff_adobe_deflate", dpi=(72, 72))
    except ImportError:
        print("make_seeds: no Pillow (apt-get install python3-pil): Pillow TIFF seeds not written")
    tiff_big_endian(out("fuzz_image2d", "us_grey_bigendian.tif"))
    # JPEG through libjpeg-turbo's cjpeg (Debian libjpeg-turbo-progs), when it is there.
    pgm = b"P5 16 16 255\n" + grey[:16, :16].tobytes()
    try:
        jpeg = subprocess.run(["cjpeg", "-quality", "50"], input=pgm, capture_output=True, check=True).stdout
        with open(out("fuzz_image2d", "us.jpg"), "wb") as f:
            f.write(jpeg)
    except (OSError, subprocess.CalledProcessError):
        print("make_seeds: no cjpeg (apt-get install libjpeg-turbo-progs): JPEG seed not written")


if __name__ == "__main__":
    img, lab = nifti_seeds()
    meta_seeds(img, lab)
    planar_seeds()

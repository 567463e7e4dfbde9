"""Compile the fused kernels for an sm_90 GPU without one (run as a script, without TRITON_INTERPRET): what
Triton's CPU interpreter lets through but the compiler refuses (types that differ between branches, shapes,
shared memory) fails here. Prints one line per kernel and variant; exit status 1 when any failed.

`kernel_compile.py PART PARTS` compiles only every PARTS-th variant from the PART-th (0-based), so that several
processes can share the work."""
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from gaincell.surrogate import decode_kernel, kernel, transfer_kernel

POINTER = "*bf16"
SCALARS = dict(tokens="i32", dim="i32", ring="i32", offset_ptr="*fp32", term_stride="i32", block_stride="i32")
ATTENTION = dict(TERMS=1, TILE=64, BLOCK_M=64, BLOCK_D=64, EVEN=True, PRECISION=None)
KERNELS = {
    "_forward_kernel": (kernel, ("q_ptr", "fk_ptr", "fv_ptr", "blocks", "out_ptr"), SCALARS,
                        dict(ATTENTION, OUT_STEPS=15)),
    "_grad_q_kernel": (kernel, ("q_ptr", "fk_ptr", "fv_ptr", "blocks", "grad_out_ptr", "grad_q_ptr"),
                       dict(SCALARS, grad_offset_ptr="*fp32"), ATTENTION),
    "_grad_kv_kernel": (kernel, ("q_ptr", "fk_ptr", "fv_ptr", "blocks", "grad_out_ptr", "grad_fk_ptr", "grad_fv_ptr"),
                        SCALARS, ATTENTION),
    "_transfer_kernel": (transfer_kernel, ("x_ptr", "grad_ptr", "out_ptr"),
                         dict(coefficients="*fp32", elements="i32", low="fp32", high="fp32", step="fp32",
                              y0="fp32", scale="fp32"), dict(DEGREE=4, LEVELS=8, BACKWARD=True, BLOCK=1024)),
    "_decode_kernel": (decode_kernel, ("q_ptr", "fk_ptr", "fv_ptr", "out_ptr"),
                       dict(decay_ptr="*fp32", valid_ptr="*i8", threshold_ptr="*fp32", group="i32", slots="i32",
                            dim="i32", dim_v="i32", tiles="i32", offset="fp32", term_stride_k="i32",
                            term_stride_v="i32"),
                       dict(TERMS=1, TILE=64, BLOCK_D=64, BLOCK_DV=128, OUT_STEPS=15, PEAK=False)),
}
ATTENTION_VARIANTS = [{}, {"EVEN": False, "BLOCK_M": 32}, {"TERMS": 4}]
VARIANTS = {"_transfer_kernel": [{}], "_decode_kernel": [{}, {"TERMS": 4, "PEAK": True}]}


def variants() -> list[tuple[str, dict]]:
    """(kernel, constants that differ from its defaults): three variants of each parallel-pass kernel, one transfer,
    two decode steps (one term and the offset reference; four terms and the peak reference)."""
    return [(name, variant) for name in KERNELS for variant in VARIANTS.get(name, ATTENTION_VARIANTS)]


def main(part: int = 0, parts: int = 1) -> int:
    failed = 0
    for name, variant in variants()[part::parts]:
        module, pointers, scalars, constants = KERNELS[name]
        function = getattr(module, name)
        values = dict(constants, **variant)
        types = {**{p: POINTER for p in pointers}, **scalars, **{k: "constexpr" for k in values}}
        signature = {arg: types[arg] for arg in function.arg_names}  # in the kernel's argument order
        source = ASTSource(fn=function, signature=signature,
                           constexprs={(function.arg_names.index(k),): v for k, v in values.items()})
        try:
            compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32),
                                      options={"num_warps": 4, "num_stages": 2})
            print(f"{name} {variant}: compiled, {compiled.metadata.shared} bytes of shared memory")
        except Exception as exc:  # the compiler's own message is the point of this check
            failed += 1
            print(f"{name} {variant}: FAILED {type(exc).__name__}: {str(exc)[:2000]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(*map(int, sys.argv[1:3])))

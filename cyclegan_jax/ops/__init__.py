"""Backend-specific forms of standard layers, each computing the same sums as
the plain JAX/XLA operation it replaces (tested against lax):
  xla_cpu_conv   convolutions and gradients in the forms XLA:CPU runs fast
  subpixel       transposed convolutions as convolution + depth-to-space
  blur           CUT's antialiased down/upsampling as strided slices
They import nothing from the rest of the package."""

"""Lessons: small, readable from-scratch implementations for learning how CNNs work.

The code here favours clarity over speed: plain NumPy, explicit loops, one idea per
function. Each lesson module opens with a short lesson text in its docstring.

* :mod:`jaxcnn.lessons.convolution` -- cross-correlation versus true convolution, the
  output-size formula, receptive fields, and a naive multi-channel ``conv2d`` that matches
  ``torch.nn.functional.conv2d``, and its backward pass (the input gradient is a true
  convolution, the kernel gradient a cross-correlation) checked against autograd.
"""

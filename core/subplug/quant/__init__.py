"""Quantised weights and a trimmed vocabulary for fast, small CPU inference.

``kernels`` holds the matrix-product kernels behind one small interface; ``modules`` the
``nn.Module`` s that use them; the rest applies them to a model.
"""

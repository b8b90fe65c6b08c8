"""Hand-written references the benchmarks time flowgrad against, for any array namespace."""


def logistic_loss_and_gradient(xp, X, T, W, B, lam):
    """Mean BCE from logits + λ·½‖w‖², its gradient in w and in b: the stable formulas,
    computing exp(−|z|) once for both the loss and the gradient."""
    n = X.shape[0]
    z = X @ W + B
    e = xp.exp(-xp.abs(z))
    loss = xp.mean(xp.maximum(z, 0) + xp.log1p(e) - z * T) + lam * 0.5 * (W @ W)
    p = xp.where(z >= 0, 1.0, e) / (1.0 + e)
    r = (p - T) / n
    return loss, X.T @ r + lam * W, r.sum()

import torch
import torch.nn.functional as F

from l2rw.run.options import number


class LDAM:
    """Label-distribution-aware margin loss (Cao et al. 2019): cross-entropy of
    s * (logits - m_y on the label's logit), with margins m_c proportional to n_c^(-1/4), so rarer
    classes get larger ones. As in Cao et al.'s released code, the margins and s assume cosine
    logits in [-1, 1] (`model.normed_head=true`)."""

    def __init__(
        self, class_counts: torch.Tensor,
        max_margin: number(gt=0, le=100, note=" (the rarest class's margin; Cao et al. use 0.5)",
                           doc="the largest margin m_c, which the others are scaled with") = 0.5,
        scale: number(gt=0, le=1000, note=" (logit scale; Cao et al. use 30 on cosine logits)",
                      doc="s, the factor on the shifted logits; about 1 suits plain logits (`model.normed_head=false`)") = 30.0,
    ):
        margins = class_counts.double().clamp(min=1).pow(-0.25)
        self.margins = (margins * (max_margin / margins.max())).float()
        self.scale = scale

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        label = F.one_hot(targets, outputs.shape[1]).to(outputs.dtype)
        shifted = outputs - label * self.margins.to(outputs.device, outputs.dtype)[targets, None]
        return F.cross_entropy(self.scale * shifted, targets, reduction="none")

// Batch mixing for training: mixup (Zhang et al. 2018, "mixup: Beyond Empirical Risk
// Minimization") and CutMix (Yun et al. 2019). A mixed batch pairs every image with a
// partner from the same batch (a seeded permutation) and trains on
//     lambda * loss(logits, labels) + (1 - lambda) * loss(logits, partner labels),
// where mixup blends whole images, x = lambda x + (1 - lambda) x_partner, and CutMix
// pastes a box of the partner into the image and sets lambda to the share of pixels
// left from the image. lambda ~ Beta(alpha, alpha) (CutMix: the box area's complement).
//
// Every draw comes from a skinlesion::Rng the caller seeds (the trainer: run seed,
// epoch, step, rank), so mixed runs stay reproducible.
#ifndef SKINLESION_TRAIN_MIX_H_
#define SKINLESION_TRAIN_MIX_H_

#include <ATen/core/Tensor.h>

#include "skinlesion/common/rng.h"
#include "skinlesion/train/losses.h"

namespace skinlesion::train {

struct MixOptions {
  double mixup_alpha = 0.0;   // Beta(alpha, alpha) for mixup; 0 = off.
  double cutmix_alpha = 0.0;  // Beta(alpha, alpha) for CutMix; 0 = off.
  // Share of batches that are mixed; with both methods on, each mixed batch takes one
  // of them with even odds.
  double prob = 1.0;
  bool enabled() const { return (mixup_alpha > 0 || cutmix_alpha > 0) && prob > 0; }
};

enum class MixKind { kNone, kMixup, kCutMix };

struct MixedBatch {
  MixKind kind = MixKind::kNone;
  at::Tensor images;           // The (possibly) mixed images, same shape and layout.
  at::Tensor partner_targets;  // Undefined when kind is kNone.
  at::Tensor partner_index;    // The partner of each row (int64 [N]); undefined for kNone.
  double lambda = 1.0;         // Weight of the images' own labels.
};

// A Beta(a, a) draw, a > 0 (two Marsaglia-Tsang gamma draws).
double SampleSymmetricBeta(double a, Rng& rng);

// images [N, C, H, W] (any dtype, any memory format), targets [N] int64 on the same
// device. N < 2 or disabled options return the batch unchanged (kNone).
MixedBatch MixBatch(const at::Tensor& images, const at::Tensor& targets, const MixOptions& options,
                    Rng& rng);

// The training loss of a (possibly) mixed batch: ComputeLoss on the labels, and for
// a mixed batch lambda-weighted with ComputeLoss on the partners' labels.
at::Tensor MixedLoss(const at::Tensor& logits, const at::Tensor& targets, const MixedBatch& batch,
                     const LossOptions& options);

// A teacher's answers [N, K] for a (possibly) mixed batch, mixed as its labels are:
// lambda * q + (1 - lambda) * q of the partner (the answers unchanged for kNone).
at::Tensor MixedTeacher(const at::Tensor& teacher_probs, const MixedBatch& batch);

}  // namespace skinlesion::train

#endif  // SKINLESION_TRAIN_MIX_H_

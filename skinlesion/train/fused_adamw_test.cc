#include "skinlesion/train/fused_adamw.h"

#include <torch/torch.h>

#include <sstream>
#include <vector>

#include "gtest/gtest.h"

namespace skinlesion::train {
namespace {

// Parameters of the shapes a CNN has: a channels-last conv weight, a matrix, a
// bias, an odd-length vector (the SIMD loop's tail).
std::vector<torch::Tensor> MakeParams(uint64_t seed) {
  torch::manual_seed(seed);
  std::vector<torch::Tensor> p;
  p.push_back(torch::randn({16, 3, 5, 5}).contiguous(torch::MemoryFormat::ChannelsLast));
  p.push_back(torch::randn({7, 33}));
  p.push_back(torch::randn({7}));
  p.push_back(torch::randn({100003}));  // Split over threads, and a tail of 3.
  for (auto& t : p) t.set_requires_grad(true);
  return p;
}

std::vector<torch::Tensor> Clone(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> out;
  for (const auto& t : params) out.push_back(t.detach().clone().set_requires_grad(true));
  return out;
}

// Two groups as BuildGroups makes them: decayed weights, and undecayed 1-D ones
// at a different learning rate.
std::vector<torch::optim::OptimizerParamGroup> Groups(const std::vector<torch::Tensor>& p) {
  std::vector<torch::optim::OptimizerParamGroup> g;
  g.emplace_back(std::vector<torch::Tensor>{p[0], p[1]},
                 std::make_unique<torch::optim::AdamWOptions>(
                     torch::optim::AdamWOptions(1e-2).weight_decay(0.05)));
  g.emplace_back(std::vector<torch::Tensor>{p[2], p[3]},
                 std::make_unique<torch::optim::AdamWOptions>(
                     torch::optim::AdamWOptions(3e-3).weight_decay(0.0)));
  return g;
}

// The same gradients on both sides: drawn from a seed of the step (not computed from
// the weights, whose rounding differences would grow through them).
void SetGradients(const std::vector<torch::Tensor>& params, int step) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(1000 + step);
  for (const auto& p : params) {
    p.mutable_grad() = torch::randn(p.sizes()).contiguous(p.suggest_memory_format());
  }
}

void ExpectClose(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b,
                 double rtol, double atol) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::allclose(a[i], b[i], rtol, atol))
        << "parameter " << i << ": largest difference " << (a[i] - b[i]).abs().max().item<double>();
  }
}

TEST(FusedAdamWTest, MatchesTorchAdamWOverManySteps) {
  const std::vector<torch::Tensor> ref = MakeParams(1);
  const std::vector<torch::Tensor> fused = Clone(ref);
  torch::optim::AdamW reference(Groups(ref));
  FusedAdamW optimizer(Groups(fused));
  for (int step = 0; step < 50; ++step) {
    // A changing learning rate, as the schedule sets it.
    for (auto* opt : std::vector<torch::optim::Optimizer*>{&reference, &optimizer}) {
      for (auto& g : opt->param_groups()) g.options().set_lr(g.options().get_lr() * 0.98);
    }
    SetGradients(ref, step);
    SetGradients(fused, step);
    reference.step();
    optimizer.step();
    ASSERT_TRUE(optimizer.last_step_fused()) << "step " << step;
  }
  ExpectClose(ref, fused, 1e-5, 1e-6);
  // The moments too: they are the state a checkpoint keeps.
  for (size_t i = 0; i < ref.size(); ++i) {
    const torch::optim::AdamWParamState* pa = AdamWStateOf(reference, ref[i]);
    const torch::optim::AdamWParamState* pb = AdamWStateOf(optimizer, fused[i]);
    ASSERT_TRUE(pa != nullptr && pb != nullptr);
    const auto& a = *pa;
    const auto& b = *pb;
    EXPECT_EQ(a.step(), b.step());
    EXPECT_TRUE(torch::allclose(a.exp_avg(), b.exp_avg(), 1e-5, 1e-7));
    EXPECT_TRUE(torch::allclose(a.exp_avg_sq(), b.exp_avg_sq(), 1e-5, 1e-9));
    EXPECT_EQ(b.exp_avg().strides(), fused[i].strides());
  }
  // And the update is not a no-op that would also "match": the weights moved.
  EXPECT_GT((fused[3] - MakeParams(1)[3]).abs().max().item<double>(), 0.05);
}

TEST(FusedAdamWTest, ClipGradNormMatchesClipGradNormThenAdamW) {
  // Gradients scaled so that some steps clip (norm > 1) and some do not.
  const std::vector<torch::Tensor> ref = MakeParams(6);
  const std::vector<torch::Tensor> fused = Clone(ref);
  torch::optim::AdamW reference(Groups(ref));
  FusedAdamW optimizer(Groups(fused));
  const double max_norm = 400.0;  // The gradients' norm is ~320 * scale below.
  int clipped = 0;
  for (int step = 0; step < 20; ++step) {
    const double scale = step % 2 == 0 ? 3.0 : 0.5;
    SetGradients(ref, step);
    SetGradients(fused, step);
    for (size_t i = 0; i < ref.size(); ++i) {
      ref[i].mutable_grad().mul_(scale);
      fused[i].mutable_grad().mul_(scale);
    }
    const double expected = torch::nn::utils::clip_grad_norm_(ref, max_norm);
    const double norm = optimizer.ClipGradNorm(max_norm);
    EXPECT_NEAR(norm, expected, 1e-5 * expected) << "step " << step;
    if (norm > max_norm) ++clipped;
    reference.step();
    optimizer.step();
    ASSERT_TRUE(optimizer.last_step_fused());
  }
  EXPECT_EQ(clipped, 10);
  ExpectClose(ref, fused, 1e-5, 1e-6);
  // The coefficient is for one step only: an unclipped step after it is AdamW's.
  SetGradients(ref, 99);
  SetGradients(fused, 99);
  optimizer.ClipGradNorm(1e-3);
  torch::nn::utils::clip_grad_norm_(ref, 1e-3);
  reference.step();
  optimizer.step();
  SetGradients(ref, 100);
  SetGradients(fused, 100);
  reference.step();
  optimizer.step();
  ExpectClose(ref, fused, 1e-5, 1e-6);
}

TEST(FusedAdamWTest, ACheckpointMovesBetweenTheTwo) {
  // torch::optim::AdamW -> FusedAdamW: the fused side continues where AdamW stopped.
  const std::vector<torch::Tensor> ref = MakeParams(2);
  const std::vector<torch::Tensor> fused = Clone(ref);
  torch::optim::AdamW reference(Groups(ref));
  for (int step = 0; step < 5; ++step) {
    SetGradients(ref, step);
    reference.step();
  }
  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < ref.size(); ++i) fused[i].copy_(ref[i]);
  }
  std::stringstream archive;
  torch::save(reference, archive);
  FusedAdamW optimizer(Groups(fused));
  torch::load(optimizer, archive);
  for (int step = 5; step < 10; ++step) {
    SetGradients(ref, step);
    SetGradients(fused, step);
    reference.step();
    optimizer.step();
    EXPECT_TRUE(optimizer.last_step_fused());
  }
  ExpectClose(ref, fused, 1e-5, 1e-6);
  // FusedAdamW -> torch::optim::AdamW.
  std::stringstream back;
  torch::save(optimizer, back);
  torch::optim::AdamW again(Groups(fused));
  torch::load(again, back);
  SetGradients(ref, 10);
  SetGradients(fused, 10);
  reference.step();
  again.step();
  ExpectClose(ref, fused, 1e-5, 1e-6);
}

TEST(FusedAdamWTest, SizeOneDimensionsMayHaveOtherStrides) {
  // A 1x1 conv weight kept channels-last whose gradient comes back contiguous (as
  // through bf16 autocast): the same memory order, so the fused pass applies.
  torch::manual_seed(7);
  torch::Tensor ref = torch::randn({8, 16, 1, 1}).set_requires_grad(true);
  // Channels-last strides of [8, 16, 1, 1] (contiguous() would keep the others: both
  // describe the same memory order).
  torch::Tensor cl = torch::empty_strided({8, 16, 1, 1}, {16, 1, 16, 16});
  cl.copy_(ref.detach());
  cl.set_requires_grad(true);
  ASSERT_NE(cl.strides(), ref.strides());
  torch::optim::AdamW reference(std::vector<torch::Tensor>{ref}, torch::optim::AdamWOptions(1e-2));
  FusedAdamW optimizer(std::vector<torch::Tensor>{cl}, torch::optim::AdamWOptions(1e-2));
  for (int step = 0; step < 3; ++step) {
    torch::Tensor g = torch::randn({8, 16, 1, 1});
    ref.mutable_grad() = g;
    cl.mutable_grad() = g.clone();  // Contiguous strides, not the parameter's.
    ASSERT_NE(cl.grad().strides(), cl.strides());
    reference.step();
    optimizer.step();
    EXPECT_TRUE(optimizer.last_step_fused()) << "step " << step;
  }
  EXPECT_TRUE(torch::allclose(ref, cl, 1e-5, 1e-6));
}

// ClipGradNorm takes the fused path and leaves its coefficient for the step; when the
// gradient is replaced by one of another layout before step(), the step falls back to
// AdamW's and must still be clipped.
TEST(FusedAdamWTest, AClipLeftForAStepThatFallsBackIsApplied) {
  torch::manual_seed(4);
  torch::Tensor ref = torch::randn({8, 12}).set_requires_grad(true);
  torch::Tensor p = ref.detach().clone().set_requires_grad(true);
  torch::optim::AdamW reference(std::vector<torch::Tensor>{ref}, torch::optim::AdamWOptions(1e-2));
  FusedAdamW optimizer(std::vector<torch::Tensor>{p}, torch::optim::AdamWOptions(1e-2));
  // A first step unclipped: Adam's update is nearly blind to a gradient's scale on the
  // first step, not once the moments hold an earlier one.
  ref.mutable_grad() = torch::sin(ref.detach());
  p.mutable_grad() = torch::sin(p.detach());
  reference.step();
  optimizer.step();
  const torch::Tensor grad = 50 * torch::cos(ref.detach());
  ref.mutable_grad() = grad.clone();
  p.mutable_grad() = grad.clone();
  const double expected = torch::nn::utils::clip_grad_norm_(std::vector<torch::Tensor>{ref}, 1.0);
  EXPECT_NEAR(optimizer.ClipGradNorm(1.0), expected, 1e-5 * expected);
  p.mutable_grad() = grad.t().contiguous().t();  // Same values, column-major.
  reference.step();
  optimizer.step();
  EXPECT_FALSE(optimizer.last_step_fused());
  EXPECT_TRUE(torch::allclose(ref, p, 1e-6, 1e-7))
      << "largest difference " << (ref - p).abs().max().item<double>();
}

// step(closure): the closure's gradients are the ones checked and read.
TEST(FusedAdamWTest, TheClosureRunsBeforeTheLayoutCheck) {
  torch::manual_seed(5);
  torch::Tensor ref = torch::randn({8, 12}).set_requires_grad(true);
  torch::Tensor p = ref.detach().clone().set_requires_grad(true);
  torch::optim::AdamW reference(std::vector<torch::Tensor>{ref}, torch::optim::AdamWOptions(1e-2));
  FusedAdamW optimizer(std::vector<torch::Tensor>{p}, torch::optim::AdamWOptions(1e-2));
  ref.mutable_grad() = torch::sin(ref.detach());
  p.mutable_grad() = torch::sin(p.detach()).t().contiguous().t();  // A layout it cannot fuse.
  const torch::Tensor loss = optimizer.step([&] {
    p.mutable_grad() = torch::sin(p.detach()).contiguous();  // The closure's: fusable.
    return p.sum();
  });
  reference.step();
  EXPECT_TRUE(optimizer.last_step_fused());
  EXPECT_TRUE(loss.defined());
  EXPECT_TRUE(torch::allclose(ref, p, 1e-6, 1e-7));
}

TEST(FusedAdamWTest, FallsBackWhereTheFusedPassDoesNotApply) {
  // A non-dense parameter (a strided view) and amsgrad: AdamW's own step, same result.
  torch::manual_seed(3);
  torch::Tensor base = torch::randn({8, 12});
  torch::Tensor ref = base.clone().set_requires_grad(true);
  torch::Tensor strided = base.t().contiguous().t().set_requires_grad(true);  // Column-major.
  ASSERT_FALSE(strided.is_contiguous());
  torch::optim::AdamW reference(std::vector<torch::Tensor>{ref}, torch::optim::AdamWOptions(1e-2));
  FusedAdamW optimizer(std::vector<torch::Tensor>{strided}, torch::optim::AdamWOptions(1e-2));
  for (int step = 0; step < 3; ++step) {
    ref.mutable_grad() = torch::cos(ref.detach());
    strided.mutable_grad() =
        torch::cos(strided.detach()).contiguous();  // Row-major: strides differ.
    reference.step();
    optimizer.step();
    EXPECT_FALSE(optimizer.last_step_fused());
  }
  EXPECT_TRUE(torch::allclose(ref, strided, 1e-6, 1e-7));

  torch::Tensor a = torch::randn({64}).set_requires_grad(true);
  torch::Tensor b = a.detach().clone().set_requires_grad(true);
  torch::optim::AdamW ams_ref(std::vector<torch::Tensor>{a},
                              torch::optim::AdamWOptions(1e-2).amsgrad(true));
  FusedAdamW ams(std::vector<torch::Tensor>{b}, torch::optim::AdamWOptions(1e-2).amsgrad(true));
  for (int step = 0; step < 3; ++step) {
    a.mutable_grad() = torch::sin(a.detach() * (step + 1));
    b.mutable_grad() = torch::sin(b.detach() * (step + 1));
    ams_ref.step();
    ams.step();
    EXPECT_FALSE(ams.last_step_fused());
  }
  EXPECT_TRUE(torch::equal(a, b));
}

TEST(FusedAdamWTest, ParametersWithoutGradientsAreLeftAlone) {
  const std::vector<torch::Tensor> params = MakeParams(4);
  const torch::Tensor before = params[1].detach().clone();
  FusedAdamW optimizer(Groups(params));
  SetGradients(params, 0);
  params[1].mutable_grad().reset();
  optimizer.step();
  EXPECT_TRUE(optimizer.last_step_fused());
  EXPECT_TRUE(torch::equal(params[1], before));  // Not even decayed.
  EXPECT_EQ(AdamWStateOf(optimizer, params[1]), nullptr);
  EXPECT_NE(AdamWStateOf(optimizer, params[0]), nullptr);
  EXPECT_EQ(optimizer.state().size(), 3u);
}

TEST(FusedAdamWTest, ClearGradientsLeavesThemUndefinedAndBackwardWritesThem) {
  const std::vector<torch::Tensor> params = MakeParams(5);
  FusedAdamW optimizer(Groups(params));
  SetGradients(params, 0);
  ClearGradients(optimizer);
  for (const auto& p : params) EXPECT_FALSE(p.grad().defined());
  (params[2] * 3).sum().backward();
  ASSERT_TRUE(params[2].grad().defined());
  EXPECT_TRUE(
      torch::allclose(params[2].grad(), torch::full({7}, 3.0)));  // Written, not added to stale.
}

}  // namespace
}  // namespace skinlesion::train

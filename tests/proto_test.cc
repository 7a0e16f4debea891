// The generated skinlesion.v1 code links and round-trips.
#include "gtest/gtest.h"
#include "skinlesion/common/classes.h"
#include "skinlesion/v1/classification.grpc.pb.h"
#include "skinlesion/v1/registry.grpc.pb.h"
#include "skinlesion/v1/training.grpc.pb.h"

namespace skinlesion {
namespace {

TEST(ProtoTest, ClassifyResponseRoundTrips) {
  v1::ClassifyResponse response;
  for (const ClassInfo& c : LabelSet::Ham10000()) {
    auto* p = response.add_probabilities();
    p->mutable_lesion_class()->set_index(c.index);
    p->mutable_lesion_class()->set_code(std::string(c.code));
    p->set_probability(1.0f / kHam10000NumClasses);
  }
  response.mutable_model()->set_name("ham10000-vit");
  response.mutable_model()->set_version(3);
  const std::string wire = response.SerializeAsString();
  v1::ClassifyResponse back;
  ASSERT_TRUE(back.ParseFromString(wire));
  ASSERT_EQ(back.probabilities_size(), kHam10000NumClasses);
  EXPECT_EQ(back.probabilities(4).lesion_class().code(), "mel");
  EXPECT_EQ(back.model().version(), 3);
}

TEST(ProtoTest, ServicesHaveTheirMethods) {
  EXPECT_STREQ(v1::ClassificationService::service_full_name(), "skinlesion.v1.ClassificationService");
  EXPECT_STREQ(v1::RegistryService::service_full_name(), "skinlesion.v1.RegistryService");
  EXPECT_STREQ(v1::TrainerService::service_full_name(), "skinlesion.v1.TrainerService");
  EXPECT_NE(v1::TrainingConfig::descriptor()->FindFieldByName("architecture"), nullptr);
  EXPECT_EQ(v1::JobState_Name(v1::JOB_STATE_RUNNING), "JOB_STATE_RUNNING");
}

}  // namespace
}  // namespace skinlesion

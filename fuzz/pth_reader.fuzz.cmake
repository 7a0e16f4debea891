# The torch.save unpickler (torch-free skinlesion_pickle, skinlesion/models/pickle.h).
# The fuzz build needs add_subdirectory(skinlesion/models) (which then defines only
# skinlesion_pickle).
if(TARGET skinlesion_pickle)
  skinlesion_fuzzer(pth_reader SRCS pth_reader.cc DEPS skinlesion_pickle)
endif()

skinlesion_fuzzer(out_of_fold SRCS out_of_fold.cc DEPS skinlesion_eval)

skinlesion_fuzzer(ham10000_csv SRCS ham10000_csv.cc DEPS skinlesion_data)

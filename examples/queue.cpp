// Python's classic Queue program: a writer process puts 'A', 'B', 'C'; a reader process
// gets them; the parent waits for the writer, then terminates the reader (which would wait
// for more for ever: the parent still holds the queue, so more could come).
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <thread>

#include <multiproc/multiproc.hpp>

namespace mp = multiproc;

void write_values(mp::queue<std::string> q) {
  std::printf("Process to write: %ld\n", mp::this_process::id());
  std::fflush(stdout);
  std::mt19937 random(static_cast<unsigned>(mp::this_process::id()));
  for (const char* value : {"A", "B", "C"}) {
    std::printf("Put %s to queue...\n", value);
    std::fflush(stdout);
    q.put(value);
    std::this_thread::sleep_for(std::chrono::milliseconds(100 + random() % 400));
  }
}

void read_values(mp::queue<std::string> q) {
  std::printf("Process to read: %ld\n", mp::this_process::id());
  std::fflush(stdout);
  for (;;) {
    const std::string value = q.get();
    std::printf("Get %s from queue.\n", value.c_str());
    std::fflush(stdout);  // it is terminated, not ended: what it printed must be out by then
  }
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  mp::queue<std::string> q;
  mp::process writer(write_values, q);
  mp::process reader(read_values, q);
  writer.start();
  reader.start();
  writer.join();
  reader.terminate();
  reader.join();
  return 0;
}

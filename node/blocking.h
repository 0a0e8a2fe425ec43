// Runs blocking work (system calls, file trees) on a thread pool and resumes the awaiting
// coroutine on its own executor with the result or the exception.
//
// Callers make the task before their co_await: GCC 12 copies the captures of a lambda made
// inside a co_await expression bitwise (short strings then point into the old frame). And
// run_blocking() is not a coroutine, so that no coroutine frame takes the task as a parameter.
#pragma once

// clang-format off
#include <utility>  // before Boost 1.74's asio, whose awaitable.hpp uses std::exchange without it
// clang-format on

#include <boost/asio.hpp>
#include <exception>
#include <type_traits>

namespace pitbox::node {

namespace asio = boost::asio;

template <typename F>
asio::awaitable<std::invoke_result_t<F>> run_blocking(asio::thread_pool& pool, F fn) {
  using R = std::invoke_result_t<F>;
  if constexpr (std::is_void_v<R>) {
    return asio::async_initiate<const asio::use_awaitable_t<>, void(std::exception_ptr)>(
        [&pool](auto handler, F task) {
          asio::post(pool, [task = std::move(task), handler = std::move(handler)]() mutable {
            std::exception_ptr failed;
            try {
              task();
            } catch (...) {
              failed = std::current_exception();
            }
            auto ex = asio::get_associated_executor(handler);
            asio::post(ex, [handler = std::move(handler), failed]() mutable {
              std::move(handler)(failed);
            });
          });
        },
        asio::use_awaitable, std::move(fn));
  } else {
    return asio::async_initiate<const asio::use_awaitable_t<>, void(std::exception_ptr, R)>(
        [&pool](auto handler, F task) {
          asio::post(pool, [task = std::move(task), handler = std::move(handler)]() mutable {
            std::exception_ptr failed;
            R result{};
            try {
              result = task();
            } catch (...) {
              failed = std::current_exception();
            }
            auto ex = asio::get_associated_executor(handler);
            asio::post(
                ex, [handler = std::move(handler), failed, result = std::move(result)]() mutable {
                  std::move(handler)(failed, std::move(result));
                });
          });
        },
        asio::use_awaitable, std::move(fn));
  }
}

}  // namespace pitbox::node

#pragma once
// Lets a test reach a private member of a class (the session's counters and queues), for the
// few checks that cannot be made from outside.

namespace tether::mux {
namespace {

// Access checks do not apply to the arguments of an explicit instantiation: the one door
// C++ leaves open for a test to reach a private member. A test declares a tag with the
// member's type and `friend type member(Tag);`, then instantiates
// `template struct expose<Tag, &Class::member_>;`; `obj.*member(Tag{})` is the member.
// (In the tests' own unnamed namespace, where the tags are, so that the friend defined here
// is the one each tag declares.)
template <class Tag, typename Tag::type Member>
struct expose {
  friend typename Tag::type member(Tag) { return Member; }
};

}  // namespace
}  // namespace tether::mux
